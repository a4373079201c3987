package process

import (
	"fmt"
	"sync"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

// uidPool hands out distinct uids from [base, base+count), so that no two
// live sandboxes share a uid (a shared uid would let one signal or ptrace-
// inspect the other's processes if they ever met, e.g. with host PIDs).
type uidPool struct {
	base, count int

	mu   sync.Mutex // guards used and next
	used map[int]bool
	next int // offset to try first: round-robin, so a uid is not reused at once
}

func newUIDPool(base, count int) *uidPool {
	return &uidPool{base: base, count: count, used: make(map[int]bool)}
}

// get returns a free uid.
func (p *uidPool) get() (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.used) >= p.count {
		return 0, errdefs.New(errdefs.ErrLimit,
			"raise process.uid_count in the system config, or lower max_instances",
			"all %d sandbox uids from %d are in use", p.count, p.base)
	}
	for i := 0; i < p.count; i++ {
		off := (p.next + i) % p.count
		if !p.used[off] {
			p.used[off] = true
			p.next = (off + 1) % p.count
			return p.base + off, nil
		}
	}
	return 0, fmt.Errorf("uid pool: inconsistent") // unreachable: len(used) < count
}

// put returns uid to the pool.
func (p *uidPool) put(uid int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.used, uid-p.base)
}

// inUse returns the number of uids handed out.
func (p *uidPool) inUse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.used)
}

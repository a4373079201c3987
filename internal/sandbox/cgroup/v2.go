package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"time"
)

// limitV2 writes the limits into the group's unified-hierarchy files.
func (g *Group) limitV2(lim Limits) error {
	if lim.MemoryBytes > 0 {
		if err := writeFile(filepath.Join(g.dir, "memory.max"), strconv.FormatInt(lim.MemoryBytes, 10)); err != nil {
			return fmt.Errorf("memory limit: %w", err)
		}
		// Absent when the kernel does not account swap; then there is
		// nothing to disable.
		if f := filepath.Join(g.dir, "memory.swap.max"); exists(f) {
			if err := writeFile(f, "0"); err != nil {
				return fmt.Errorf("swap limit: %w", err)
			}
		}
	}
	if lim.MilliCPU > 0 {
		period, quota := cfsQuota(lim.MilliCPU)
		if err := writeFile(filepath.Join(g.dir, "cpu.max"), fmt.Sprintf("%d %d", quota, period)); err != nil {
			return fmt.Errorf("cpu limit (is the cpu controller enabled in %s?): %w",
				filepath.Join(g.m.root, g.m.name, "cgroup.subtree_control"), err)
		}
	}
	if lim.Pids > 0 {
		if err := writeFile(filepath.Join(g.dir, "pids.max"), strconv.FormatInt(lim.Pids, 10)); err != nil {
			return fmt.Errorf("pids limit (is the pids controller enabled in %s?): %w",
				filepath.Join(g.m.root, g.m.name, "cgroup.subtree_control"), err)
		}
	}
	return nil
}

func (g *Group) usageV2() (Usage, error) {
	var u Usage
	usec, _, err := readKey(filepath.Join(g.dir, "cpu.stat"), "usage_usec")
	if err != nil {
		return u, err
	}
	u.CPUTime = time.Duration(usec) * time.Microsecond
	if u.MemoryBytes, err = readInt(filepath.Join(g.dir, "memory.current")); err != nil {
		return u, err
	}
	// memory.peak appeared in Linux 5.19.
	u.MemoryPeak, err = readInt(filepath.Join(g.dir, "memory.peak"))
	if errors.Is(err, fs.ErrNotExist) {
		u.MemoryPeak, err = u.MemoryBytes, nil
	}
	if err != nil {
		return u, err
	}
	kills, _, err := readKey(filepath.Join(g.dir, "memory.events"), "oom_kill")
	if err != nil {
		return u, err
	}
	u.OOMKills = int(kills)
	return u, nil
}

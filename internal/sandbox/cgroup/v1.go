package cgroup

import (
	"fmt"
	"path/filepath"
	"strconv"
	"time"
)

// limitV1 writes the limits into the legacy per-controller hierarchies.
func (g *Group) limitV1(lim Limits) error {
	if lim.MemoryBytes > 0 {
		mem := g.v1["memory"]
		v := strconv.FormatInt(lim.MemoryBytes, 10)
		if err := writeFile(filepath.Join(mem, "memory.limit_in_bytes"), v); err != nil {
			return fmt.Errorf("memory limit: %w", err)
		}
		// memory+swap = memory: no swap. The file exists only when the
		// kernel accounts swap (swapaccount=1); without it the limit
		// still holds for RAM.
		if f := filepath.Join(mem, "memory.memsw.limit_in_bytes"); exists(f) {
			if err := writeFile(f, v); err != nil {
				return fmt.Errorf("memory+swap limit: %w", err)
			}
		}
		if f := filepath.Join(mem, "memory.swappiness"); exists(f) {
			_ = writeFile(f, "0") // belt and braces; refused on the root group only
		}
	}
	if lim.MilliCPU > 0 {
		cpu := g.v1["cpu"]
		if cpu == "" {
			return fmt.Errorf("cpu limit: the cpu controller is not mounted at %s", filepath.Join(g.m.root, "cpu"))
		}
		period, quota := cfsQuota(lim.MilliCPU)
		if err := writeFile(filepath.Join(cpu, "cpu.cfs_period_us"), strconv.FormatInt(period, 10)); err != nil {
			return fmt.Errorf("cpu period: %w", err)
		}
		if err := writeFile(filepath.Join(cpu, "cpu.cfs_quota_us"), strconv.FormatInt(quota, 10)); err != nil {
			return fmt.Errorf("cpu quota: %w", err)
		}
	}
	if lim.Pids > 0 {
		pids := g.v1["pids"]
		if pids == "" {
			return fmt.Errorf("pids limit: the pids controller is not mounted at %s", filepath.Join(g.m.root, "pids"))
		}
		if err := writeFile(filepath.Join(pids, "pids.max"), strconv.FormatInt(lim.Pids, 10)); err != nil {
			return fmt.Errorf("pids limit: %w", err)
		}
	}
	return nil
}

// cfsQuota converts a CPU limit in millicores to a CFS period and quota in
// microseconds. The kernel refuses quotas below 1 ms.
func cfsQuota(milli int64) (period, quota int64) {
	period = CPUPeriod.Microseconds()
	quota = milli * period / 1000
	return period, max(quota, 1000)
}

func (g *Group) usageV1() (Usage, error) {
	var u Usage
	if d := g.v1["cpuacct"]; d != "" {
		ns, err := readInt(filepath.Join(d, "cpuacct.usage"))
		if err != nil {
			return u, err
		}
		u.CPUTime = time.Duration(ns)
	}
	mem := g.v1["memory"]
	cur, err := readInt(filepath.Join(mem, "memory.usage_in_bytes"))
	if err != nil {
		return u, err
	}
	peak, err := readInt(filepath.Join(mem, "memory.max_usage_in_bytes"))
	if err != nil {
		return u, err
	}
	u.MemoryBytes, u.MemoryPeak = cur, peak
	kills, ok, err := readKey(filepath.Join(mem, "memory.oom_control"), "oom_kill")
	if err != nil {
		return u, err
	}
	if !ok {
		// Kernels before 4.13 do not count kills; failcnt counts the times
		// the limit was hit, which is the closest signal they give.
		if kills, err = readInt(filepath.Join(mem, "memory.failcnt")); err != nil {
			return u, err
		}
	}
	u.OOMKills = int(kills)
	return u, nil
}

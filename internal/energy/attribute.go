package energy

import (
	"fmt"
	"sort"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

// Window is what Attribute needs about one interval: the node's energy over
// it and the CPU time of everything that ran.
type Window struct {
	Duration time.Duration // wall time of the window
	Energy   float64       // node joules over the window (Between two readings)
	Source   Kind          // where Energy came from
	// IdleWatts is the node's power when nothing runs: the model's idle
	// coefficient, or an idle baseline measured with the same source.
	IdleWatts float64
	// NodeCPU is all busy CPU time on the node in the window (BusyBetween
	// two /proc/stat samples): the denominator of every share.
	NodeCPU time.Duration
	// PlatformCPU is the wisp server's own CPU time (gateway, scheduler,
	// store): overhead.
	PlatformCPU time.Duration
	Instances   []InstanceCPU
}

// InstanceCPU is one sandbox's (cgroup's) CPU time in the window.
type InstanceCPU struct {
	Function string
	Instance string
	// CPU is the cgroup's CPU time in the window (cpu.stat usage_usec delta).
	CPU time.Duration
	// ColdStartCPU is the part of CPU spent creating the instance and
	// initialising its runtime, before its first call.
	ColdStartCPU time.Duration
	// ExecCPU is the part spent serving calls; when zero, the sum of Calls.
	// The rest (CPU − cold start − exec) is the instance idling warm.
	ExecCPU time.Duration
	// Calls optionally splits ExecCPU per activation.
	Calls []CallCPU
}

// CallCPU is one activation's CPU time.
type CallCPU struct {
	Activation string
	CPU        time.Duration
}

// Report is a window's energy, split so that the parts add up:
// Total = Idle + ColdStart + Execution + IdleInstances + Platform + Other.
type Report struct {
	Window time.Duration `json:"window_ns"`
	Source Kind          `json:"source"`
	Total  float64       `json:"total_j"`
	// Idle is the node's idle power × window: energy spent whether or not
	// anything runs.
	Idle float64 `json:"idle_j"`
	// Active is Total − Idle, the energy shared out by CPU time.
	Active float64 `json:"active_j"`
	// Execution is function code serving calls: E_function of sPUE.
	Execution float64 `json:"execution_j"`
	// ColdStart is instances being created and initialised.
	ColdStart float64 `json:"cold_start_j"`
	// IdleInstances is warm instances' CPU time outside calls.
	IdleInstances float64 `json:"idle_instances_j"`
	// Platform is the wisp process itself (gateway, scheduler, store).
	Platform float64 `json:"platform_j"`
	// Other is the active energy of CPU time outside wisp and its sandboxes
	// (other processes, the kernel).
	Other float64 `json:"other_j"`
	// Overhead is Total − Execution.
	Overhead float64 `json:"overhead_j"`
	// SPUE is Total / Execution (≥ 1); 0 when no function code ran.
	SPUE      float64          `json:"spue"`
	Functions []FunctionEnergy `json:"functions,omitempty"`
	Warnings  []string         `json:"warnings,omitempty"`
}

// FunctionEnergy is one function's share over the window.
type FunctionEnergy struct {
	Function      string             `json:"function"`
	CPU           time.Duration      `json:"cpu_ns"`
	ColdStart     float64            `json:"cold_start_j"`
	Execution     float64            `json:"execution_j"`
	IdleInstances float64            `json:"idle_instances_j"`
	Total         float64            `json:"total_j"`
	Activations   []ActivationEnergy `json:"activations,omitempty"`
}

// ActivationEnergy is one call's execution energy.
type ActivationEnergy struct {
	Activation string        `json:"activation"`
	Instance   string        `json:"instance,omitempty"`
	CPU        time.Duration `json:"cpu_ns"`
	Joules     float64       `json:"energy_j"`
}

// Attribute splits a window's energy by CPU time, as Kepler does per pod:
// active energy = Total − IdleWatts × Duration, and each consumer gets
// active energy × its CPU time / all busy CPU time on the node. Inputs that
// disagree (cgroups that add up to more than the node's busy time, idle
// power above the measured average) are clamped so that the parts still add
// up to the total, with a warning in the report.
func Attribute(w Window) (Report, error) {
	if err := w.validate(); err != nil {
		return Report{}, err
	}
	r := Report{Window: w.Duration, Source: w.Source, Total: w.Energy}
	r.Idle = w.IdleWatts * w.Duration.Seconds()
	if r.Idle > r.Total {
		r.Warnings = append(r.Warnings, fmt.Sprintf(
			"idle power %.3g W is above the measured average %.3g W over the window; all energy counted as idle (calibrate the idle power against this source)",
			w.IdleWatts, r.Total/w.Duration.Seconds()))
		r.Idle = r.Total
	}
	r.Active = r.Total - r.Idle

	type split struct{ cold, exec, idle, calls time.Duration }
	splits := make([]split, len(w.Instances))
	known := w.PlatformCPU
	for i, in := range w.Instances {
		s := split{cold: in.ColdStartCPU, exec: in.ExecCPU}
		for _, c := range in.Calls {
			s.calls += c.CPU
		}
		if s.exec == 0 {
			s.exec = s.calls
		}
		if s.calls > s.exec {
			r.Warnings = append(r.Warnings, fmt.Sprintf("%s/%s: calls' CPU time %s exceeds its exec CPU time %s; using the calls' sum",
				in.Function, in.Instance, s.calls, s.exec))
			s.exec = s.calls
		}
		cpu := in.CPU
		if s.cold+s.exec > cpu {
			r.Warnings = append(r.Warnings, fmt.Sprintf("%s/%s: cold start + exec CPU time %s exceeds the cgroup's %s; using the larger",
				in.Function, in.Instance, s.cold+s.exec, cpu))
			cpu = s.cold + s.exec
		}
		s.idle = cpu - s.cold - s.exec
		splits[i] = s
		known += cpu
	}
	denom := w.NodeCPU
	if known > denom {
		r.Warnings = append(r.Warnings, fmt.Sprintf("CPU time of sandboxes and platform (%s) exceeds the node's busy time (%s); shares computed over the former",
			known, w.NodeCPU))
		denom = known
	}
	share := func(d time.Duration) float64 {
		if denom == 0 {
			return 0
		}
		return r.Active * d.Seconds() / denom.Seconds()
	}

	byFn := map[string]*FunctionEnergy{}
	for i, in := range w.Instances {
		s := splits[i]
		fe := byFn[in.Function]
		if fe == nil {
			fe = &FunctionEnergy{Function: in.Function}
			byFn[in.Function] = fe
		}
		fe.CPU += s.cold + s.exec + s.idle
		fe.ColdStart += share(s.cold)
		fe.Execution += share(s.exec)
		fe.IdleInstances += share(s.idle)
		for _, c := range in.Calls {
			fe.Activations = append(fe.Activations, ActivationEnergy{Activation: c.Activation, Instance: in.Instance, CPU: c.CPU, Joules: share(c.CPU)})
		}
	}
	for _, fe := range byFn {
		fe.Total = fe.ColdStart + fe.Execution + fe.IdleInstances
		r.ColdStart += fe.ColdStart
		r.Execution += fe.Execution
		r.IdleInstances += fe.IdleInstances
		r.Functions = append(r.Functions, *fe)
	}
	sort.Slice(r.Functions, func(i, j int) bool { return r.Functions[i].Function < r.Functions[j].Function })
	r.Platform = share(w.PlatformCPU)
	if denom == 0 {
		r.Other = r.Active // nothing measured ran: the active energy is unexplained
	} else {
		r.Other = share(denom - known)
	}
	r.Overhead = r.Total - r.Execution
	if r.Execution > 0 {
		r.SPUE = r.Total / r.Execution
	}
	return r, nil
}

func (w Window) validate() error {
	bad := func(what string, v any) error {
		return fmt.Errorf("attribute energy: %s %v is negative or missing: %w", what, v, errdefs.ErrInvalid)
	}
	switch {
	case w.Duration <= 0:
		return bad("window", w.Duration)
	case w.Energy < 0:
		return bad("energy", w.Energy)
	case w.IdleWatts < 0:
		return bad("idle power", w.IdleWatts)
	case w.NodeCPU < 0:
		return bad("node CPU time", w.NodeCPU)
	case w.PlatformCPU < 0:
		return bad("platform CPU time", w.PlatformCPU)
	}
	for _, in := range w.Instances {
		if in.CPU < 0 || in.ColdStartCPU < 0 || in.ExecCPU < 0 {
			return bad(fmt.Sprintf("CPU time of %s/%s", in.Function, in.Instance), in.CPU)
		}
		for _, c := range in.Calls {
			if c.CPU < 0 {
				return bad("CPU time of activation "+c.Activation, c.CPU)
			}
		}
	}
	return nil
}

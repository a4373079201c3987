// Package energy measures how much energy the node uses and attributes it to
// functions, their cold starts, and the platform itself, so that every
// activation can carry energy_j and every report an sPUE (seed 000:
// sPUE = E_total / E_function).
//
// # Sources
//
// A [Source] returns cumulative joules since it was opened, tagged with the
// [Kind] it came from. [Sources] probes the machine and returns the usable
// ones best first; [Best] keeps the first. Every source's Describe says what
// it measures, so a report can print it.
//
//   - rapl: Intel/AMD RAPL counters through the powercap sysfs tree
//     (/sys/class/powercap/intel-rapl:N/energy_uj and its intel-rapl:N:M
//     subzones). The node figure is the sum of the package-N zones plus any
//     dram zones (DRAM is outside the package domain); core and uncore
//     subzones lie inside their package and are reported as domains only, and
//     psys (the whole SoC platform, on client parts) is used alone when no
//     package zone exists, never added to them. Counters wrap at
//     max_energy_range_uj (about 262 kJ: some 40 minutes at 100 W), so a
//     source must be read at least once per wrap period; each Read folds
//     wraps into a 64-bit total. RAPL covers the CPU sockets and DRAM only:
//     not disks, NICs, fans, PSU losses. energy_uj is readable by root only
//     (since Linux 5.10, CVE-2020-8694). intel-rapl-mmio zones duplicate the
//     package zone and are ignored.
//   - perf: the same hardware counters through perf's "power" PMU
//     (/sys/bus/event_source/devices/power, events energy-pkg, energy-cores,
//     energy-ram, energy-psys with their .scale and .unit files), opened with
//     perf_event_open on one CPU per package (the PMU's cpumask). The kernel
//     extends the 32-bit hardware counter to 64 bits, so no wrap is visible.
//     The node figure follows the rapl rule: pkg + ram, else psys. Needs
//     CAP_PERFMON (or root) for CPU-wide events. Some virtual machines expose
//     energy-psys but it reads zero: a counter that does not move during the
//     probe window is dropped with a reason, and when none moves the source
//     is unusable.
//   - model: an estimate, not a measurement, for machines with no counter
//     (most VMs). P = P_idle + (P_max − P_idle) × u, where u is the node's
//     CPU utilisation from /proc/stat deltas (busy = user+nice+system+irq+
//     softirq over busy+idle+iowait; steal and guest time are left out of
//     both, since guest time is already in user and steal is time the CPU was
//     not ours). Default coefficients, per logical CPU:
//     P_idle = 0.74 W and P_max = 3.5 W, the "Average Minimum/Maximum Watts
//     (0 %/100 % CPU utilisation)" per vCPU of Cloud Carbon Footprint's
//     methodology (Appendix I, AWS; https://www.cloudcarbonfootprint.org/docs/methodology/),
//     which CCF derives from SPECpower_ssj2008 results: an idle/peak ratio
//     of 0.21. On the 2-CPU machines this gives 1.48 W idle and 7.0 W peak.
//     It covers CPU power only, like RAPL's package domain; it cannot see
//     frequency, instruction mix or memory traffic, so two workloads with
//     the same CPU time get the same energy. Override the coefficients in
//     [ModelConfig], or fit them against a real counter with [Calibrate].
//
// # Attribution
//
// [Attribute] applies Kepler's rule over a window: node active energy is the
// total minus idle power × window, and each cgroup gets active energy × its
// CPU time / all busy CPU time on the node. It splits each instance's share
// into cold start (creation and runtime init: CPU time before its first
// call), execution (CPU time serving calls, per activation when per-call CPU
// time is given) and idle (a warm instance waiting), and charges the wisp
// process's own CPU time (gateway, scheduler) to the platform. What is left
// of active energy (other processes, the kernel) is "other". The parts add up
// to the node total: idle + cold start + execution + warm idle + platform +
// other = total. E_function is the execution energy only; everything else
// is overhead, so sPUE = total / execution ≥ 1.
//
// Everything except the sources' Read is a pure function over readings and
// CPU-time samples, so it is tested without a real machine.
package energy

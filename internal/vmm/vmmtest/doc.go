// Package vmmtest is what tests of vmm drivers, and of the code that uses
// them, share: Run, the behaviour suite every vmm.Driver passes, and
// MemDriver, an in-memory driver for the daemon's unit tests.
//
// # The suite
//
// Each driver's tests call Run with a Harness that says how to make the
// driver and a bootable Spec on this host: QEMU boots a real kernel and
// busybox initrd, Firecracker runs its stand-in process, MemDriver runs in
// memory. Run's cases (subtests of the same names) pin down what must hold
// for every driver: identity and features, refusal of a bad spec or an
// unusable host, a start that is cancelled or whose VMM exits at once, a
// boot that reaches the console marker and the agent, shutdown of a
// cooperative guest and of one that ignores the request, adopting a
// machine after a daemon restart, two machines at once with their own
// vsock context ids, and after every end no VMM process, socket or run
// file left behind.
//
// # MemDriver
//
// MemDriver satisfies vmm.Driver (and vmm.Checker) without processes: a
// machine is a value in memory with a pretend guest. Make one with
// NewMemDriver; a daemon restart is modelled by Restart, which returns a
// new driver on the same pretend host, so its Adopt finds the machines the
// first one started.
//
// What it records: every Start (also a refused one), Adopt, DialAgent,
// Pause, Resume, Shutdown and Kill, and every machine exit, in order, as
// Events (Op, Spec.ID, PID, the Spec on starts, the error of a refused
// start, how a machine ended). Machine(id) returns the running machine of
// a VM by Spec.ID, a *MemMachine, for a test to act on; Start and Adopt
// return *MemMachine values too.
//
// What it checks like the real drivers: Start refuses a spec they refuse
// (no dir, kernel, vcpus or memory, a Dir too long for socket paths,
// drives or NICs without ids, a root drive not first) and a second
// running machine in the same Spec.Dir. A Handle holds the pretend PID and
// Spec.Dir; Adopt refuses, with vmm.ErrNotRunning, a handle of another
// driver, a PID that is not running, or a spec with another Dir.
//
// How to act on it:
//   - Make Start fail: MemOptions.StartHook returns the error Start
//     returns, as it is (wrap vmm.ErrNotRunning or vmm.ErrCIDInUse to play
//     those). MemOptions.Unavailable makes Check and every Start fail with
//     vmm.ErrUnavailable.
//   - Make a CID taken by a VM outside banger: HoldCID. With the vsock
//     transport (the default) Start also refuses a CID another running
//     machine on the host holds, with vmm.ErrCIDInUse, and a CID below 3.
//   - Make a machine crash: (*MemMachine).Crash; the guest powering off on
//     its own: (*MemMachine).PowerOff. Done closes, open agent connections
//     close, DialAgent then wraps vmm.ErrNotRunning.
//   - A guest that ignores shutdown, a slow agent, or none: MemOptions.Guest
//     returns a MemGuest for each spec (IgnoreShutdown, AgentDelay,
//     NoAgent). Shutdown then kills the machine once its ctx is done. A
//     paused guest also ignores Shutdown's request, as under QEMU.
//   - The guest agent: MemOptions.Agent serves the guest end of every
//     DialAgent connection (a Unix socketpair); its ctx ends with the
//     machine. By default it echoes what it reads. A test can run the real
//     agent protocol there, and call PowerOff from its shutdown handler.
//
// MemDriver passes Run, all cases but ExitAtOnce, which needs a VMM
// process (memdriver_test.go says which cases pin only its pretend guest).
//
// PIDs of MemDriver machines are 1<<22 and above, never a host process, so
// code that signals or inspects a PID from a Handle touches nothing real.
// MemDriver writes nothing but one line, "vmmtest: guest <name> booted",
// appended to Spec.ConsoleLog (best effort) when a machine starts.
package vmmtest

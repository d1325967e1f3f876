// Package crashpoint names the moments between the steps of banger's
// operations where a test may kill the daemon, to prove that whatever a
// crash leaves half done is finished or undone at the next start.
//
// Hit is a no-op in every build but one made with the build tag
// bangercrash (make test builds bin/crash/ so): there, a process whose
// BANGER_CRASH_AT names the point (or lists it, comma-separated) kills
// itself with SIGKILL when it gets there. "point@N" kills at the Nth hit
// of a point passed more than once (a pull's layers). Release builds
// (make build, make install) never have the tag, so Hit compiles to
// nothing and BANGER_CRASH_AT is ignored.
package crashpoint

// Point is a named moment between two steps of an operation.
type Point string

// EnvVar names the points a bangercrash build dies at.
const EnvVar = "BANGER_CRASH_AT"

// The points, by operation. A point's name says what is done when it is
// reached: "after-x" means x happened and nothing after it did.
const (
	// image pull (OCI): each layer, the ext4 build, the commit.
	ImageLayerWritten  Point = "image.pull.layer-written"  // a layer's blob is in its temp file, not yet renamed into the cache
	ImageLayerCached   Point = "image.pull.layer-cached"   // a layer's blob is in the cache
	ImageLayerUnpacked Point = "image.pull.layer-unpacked" // a layer is read into the staging tree
	ImageBeforeExt4    Point = "image.pull.before-ext4"
	ImageAfterExt4     Point = "image.pull.after-ext4"
	ImageBeforeCommit  Point = "image.pull.before-commit" // manifest written and synced, stage not renamed
	ImageAfterCommit   Point = "image.pull.after-commit"  // the image is in place, the client not told

	// kernel pull (and import: they share the build and the commit).
	KernelAfterFetch    Point = "kernel.pull.after-fetch" // the .deb is downloaded and checked
	KernelAfterInitrd   Point = "kernel.pull.after-initrd"
	KernelBeforeCommit  Point = "kernel.pull.before-commit"
	KernelAfterCommit   Point = "kernel.pull.after-commit"
	KernelImportStarted Point = "kernel.import.after-stage" // a kernel import made its staging dir

	// vm create: the record, its lease, its disk, then its first start.
	VMCreateAfterRow      Point = "vm.create.after-row"
	VMCreateAfterLease    Point = "vm.create.after-lease"
	VMCreateAfterDisk     Point = "vm.create.after-disk"
	VMCreateAfterPorts    Point = "vm.create.after-ports"    // its forwards listen
	VMCreateAfterTap      Point = "vm.create.after-tap"      // its tap is up
	VMCreateAfterVMM      Point = "vm.create.after-vmm"      // its VMM runs, not yet recorded
	VMCreateAfterStarting Point = "vm.create.after-starting" // recorded starting, agent not yet waited for
	VMCreateAfterReady    Point = "vm.create.after-ready"    // its agent answered, not yet recorded running

	// vm start of a made VM: the same steps as a create's first start.
	VMStartAfterPorts    Point = "vm.start.after-ports"
	VMStartAfterTap      Point = "vm.start.after-tap"
	VMStartAfterVMM      Point = "vm.start.after-vmm"
	VMStartAfterStarting Point = "vm.start.after-starting"
	VMStartAfterReady    Point = "vm.start.after-ready"

	// vm stop.
	VMStopAfterVMM    Point = "vm.stop.after-vmm"    // the VMM exited, its tap and record not yet updated
	VMStopAfterDetach Point = "vm.stop.after-detach" // its tap is gone, not yet recorded stopped

	// vm delete.
	VMDeleteAfterStop  Point = "vm.delete.after-stop"
	VMDeleteAfterMark  Point = "vm.delete.after-mark"  // recorded deleting
	VMDeleteAfterFiles Point = "vm.delete.after-files" // its directory is gone, its record not

	// session start.
	SessionAfterGuest  Point = "session.start.after-guest"  // the guest runs it, the host has no record
	SessionAfterRecord Point = "session.start.after-record" // recorded, its socket not yet served

	// port add.
	PortAfterRecord Point = "port.add.after-record" // recorded, not yet listening
	PortAfterListen Point = "port.add.after-listen"

	// policy change (vm net).
	NetAfterRecord Point = "vm.net.after-record" // the new policy is recorded, not yet in force
	NetAfterApply  Point = "vm.net.after-apply"  // in force (nftables), the client not told

	// vm snapshot (and a fork's first half): the row, the VMM's save,
	// the disk's freeze; the source VM is paused throughout.
	SnapshotAfterRow    Point = "vm.snapshot.after-row"    // recorded creating, nothing saved
	SnapshotAfterSave   Point = "vm.snapshot.after-save"   // memory and device state written, the disk not frozen
	SnapshotAfterFreeze Point = "vm.snapshot.after-freeze" // recorded ready, the source still paused

	// vm create --from-snapshot (and a fork's second half, and a warm start).
	RestoreAfterVMM      Point = "vm.restore.after-vmm"      // the VMM restored and recorded; the guest has its source's identity
	RestoreAfterIdentity Point = "vm.restore.after-identity" // the guest has its own identity, not yet recorded running
)

// All is every point, in the order of the operations' steps: the crash
// matrix kills the daemon at each.
var All = []Point{
	ImageLayerWritten, ImageLayerCached, ImageLayerUnpacked, ImageBeforeExt4, ImageAfterExt4, ImageBeforeCommit, ImageAfterCommit,
	KernelAfterFetch, KernelAfterInitrd, KernelBeforeCommit, KernelAfterCommit, KernelImportStarted,
	VMCreateAfterRow, VMCreateAfterLease, VMCreateAfterDisk, VMCreateAfterPorts, VMCreateAfterTap, VMCreateAfterVMM,
	VMCreateAfterStarting, VMCreateAfterReady,
	VMStartAfterPorts, VMStartAfterTap, VMStartAfterVMM, VMStartAfterStarting, VMStartAfterReady,
	VMStopAfterVMM, VMStopAfterDetach,
	VMDeleteAfterStop, VMDeleteAfterMark, VMDeleteAfterFiles,
	SessionAfterGuest, SessionAfterRecord,
	PortAfterRecord, PortAfterListen,
	NetAfterRecord, NetAfterApply,
	SnapshotAfterRow, SnapshotAfterSave, SnapshotAfterFreeze,
	RestoreAfterVMM, RestoreAfterIdentity,
}

// Known reports whether p is one of All.
func Known(p Point) bool {
	for _, q := range All {
		if q == p {
			return true
		}
	}
	return false
}

// Package image makes the OCI images the container execution mode runs,
// without a registry: it builds each runtime's base image from what is
// installed on this machine, imports image archives (OCI or Docker, as
// `docker save` or `skopeo copy oci-archive:` write them), and pulls image
// references when a registry is reachable. Everything lands in containerd
// as a proper image: blobs in its content store, an image record, and the
// layers unpacked into a snapshotter, ready for a container's root.
//
// Data path: container backend (internal/sandbox/container) → Builder.Runtime
// (once per runtime and host state, cached) → containerd image → snapshot
// view per container.
//
// # Runtime base images
//
// A runtime's base image is one uncompressed layer holding exactly the
// files its interpreter needs, copied from the host:
//
//   - python3, python3.N: the interpreter, its standard library directory
//     (/usr/lib/python3.N, without test suites and GUI toolkits);
//   - node: the interpreter;
//   - exec: the POSIX shell and the basic command-line tools (dash,
//     coreutils, grep, sed, mawk, findutils), found with dpkg-query where
//     dpkg exists and by path otherwise;
//
// each with the shared-library closure of every ELF file in it (DT_NEEDED
// resolved in the multiarch library directories, like ld.so does) and of
// the running wisp binary, which the container backend mounts into every
// container as its entry shim. Symbolic links on the way to a file (a
// usrmerge /lib → usr/lib) are kept as links, so paths inside the image
// are the host's. The image also holds a minimal /etc (passwd, group) and
// the empty mount points the backend binds into (/code, /wisp, /run/wisp),
// so that a container can run on a read-only view of it.
//
// The image name is wisp.local/runtime/RUNTIME:KEY, where KEY is a digest
// of the builder's version and of the path, mode, size, modification time
// and link target of every file that goes in: a host whose packages have not
// changed reuses the image without reading a byte of it, and an upgraded
// package makes a new one (older images of the runtime are deleted).
// Debian's dist-packages are not included: functions vendor their packages.
//
// # Caveats
//
// The ctx passed to every function must carry the containerd namespace
// (namespaces.WithNamespace). The files are those of the host at build
// time; an image built here runs on hosts with the same architecture.
package image

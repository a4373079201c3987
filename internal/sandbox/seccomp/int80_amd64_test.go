package seccomp

// int80Getpid makes getpid through the 32-bit int 0x80 entry point.
func int80Getpid() int32

const haveInt80 = true

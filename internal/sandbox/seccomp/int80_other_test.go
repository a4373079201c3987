//go:build !amd64

package seccomp

func int80Getpid() int32 { return -1 }

const haveInt80 = false

//go:build linux && (amd64 || arm64 || riscv64 || loong64)

package upload

import (
	"os"
	"syscall"
)

// syncFileRangeWrite is SYNC_FILE_RANGE_WRITE: start the write-out of the range's dirty
// pages, do not wait for it.
const syncFileRangeWrite = 0x2

// startWriteback asks the kernel to start writing n bytes of f from off to disk
// (sync_file_range). It is advice: errors are ignored, durability comes from fsync.
func startWriteback(f *os.File, off, n int64) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_, _, _ = syscall.Syscall6(syscall.SYS_SYNC_FILE_RANGE, fd, uintptr(off), uintptr(n), syncFileRangeWrite, 0, 0)
	})
}

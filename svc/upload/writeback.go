package upload

import "os"

// writeBehindWindow is how many bytes of an upload may sit in the page cache, written but
// not yet on their way to disk. Without it the kernel may keep a whole large upload in
// memory until the fsync at the end, which then writes it all while the client waits for
// the answer (about half a second per GiB on a fast disk, longer on a busy one) and floods
// the disk with one burst.
const writeBehindWindow = 8 << 20

// writeBehind starts the write-out of a file's new bytes to disk as they arrive, a window
// at a time, without waiting for it: the disk works while the network does, and the final
// fsync, which alone makes the file durable, finds little left to write.
type writeBehind struct {
	f *os.File
	// start is the offset of the first byte not yet handed to the disk, end the offset
	// after the last byte written.
	start, end int64
}

// newWriteBehind tracks writes to f from offset on.
func newWriteBehind(f *os.File, offset int64) *writeBehind {
	return &writeBehind{f: f, start: offset, end: offset}
}

// wrote records n more bytes written at the end; a full window goes to the disk.
func (w *writeBehind) wrote(n int) {
	w.end += int64(n)
	if w.end-w.start >= writeBehindWindow {
		startWriteback(w.f, w.start, w.end-w.start)
		w.start = w.end
	}
}

package upload

import (
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"encoding/json"
	"errors"
	"hash"
	"io"
	"os"
	"path/filepath"

	"github.com/tus/tusd/v2/pkg/handler"
)

// hashSuffix names the sha256 state file of an unfinished tus upload, <tus dir>/<id>.sha256:
// the digest of the bytes stored so far, which every PATCH carries forward as it stores
// its bytes. When the last byte is in, the upload's sha256 is known at once, instead of
// costing a second pass over the whole file while the client waits for its answer.
//
// The state is kept apart from the .info file because it need not be durable: .info is
// tusd's record of the upload and is written with fsync, while a state file that is
// missing, torn or behind the bytes (a crash, a failed write) only means that the file is
// read once more at the end. So it is written without fsync, cheaply even for small PATCHes.
const hashSuffix = ".sha256"

// hashState is the content of a sha256 state file.
type hashState struct {
	// Offset is how many bytes of the upload the digest covers.
	Offset int64 `json:"offset"`
	// Digest is the sha256 digest's state, as its MarshalBinary returns it.
	Digest []byte `json:"digest"`
}

// hashingUpload is a tus upload whose PATCHes hash the bytes they store.
type hashingUpload struct {
	handler.Upload
	t *tusServer
}

var _ handler.Upload = hashingUpload{}

// WriteChunk implements handler.Upload: it stores the chunk through the file store and
// carries the upload's sha256 state forward over exactly the bytes stored. The caller
// (tusd) holds the upload's lock, so no other request reads or writes the state meanwhile.
func (u hashingUpload) WriteChunk(ctx context.Context, offset int64, src io.Reader) (int64, error) {
	info, err := u.Upload.GetInfo(ctx)
	if err != nil {
		return 0, err
	}
	body := requestBody(ctx)
	if body != nil {
		body.limit(info.Size - offset)
	}
	h := u.t.resumeHash(info.ID, offset)
	buf := u.t.s.buffer()
	defer u.t.s.release(buf)
	hr := &hashingReader{r: src, h: h, buf: *buf, offset: offset}
	n, err := u.Upload.WriteChunk(ctx, offset, hr)
	// A state that does not cover exactly the bytes stored is not kept: the next PATCH
	// finds none for its offset, and the end reads the file again.
	if h != nil && n > 0 && hr.hashed == n {
		u.t.saveHash(ctx, info.ID, offset+n, h)
	}
	if body != nil && body.overran() {
		// The body held back its last bytes, so the upload is not complete. A PATCH keeps
		// what it stored (the client resumes from HEAD's offset); a creation's client
		// never learns the upload's URL, so the upload and its video go.
		if body.creation {
			u.t.discardCreated(ctx, u, info.ID, ErrSizeExceeded)
		}
		return n, body.err
	}
	if body != nil && body.creation && body.failed() != nil {
		u.t.discardCreated(ctx, u, info.ID, body.failed())
		return n, err
	}
	return n, err
}

// hashingReader hands a request body to the file store, hashing what passes through (h
// nil: nothing). The file store copies with io.Copy, which takes the WriteTo path: the
// copy then uses buf, a large buffer, hashes exactly the bytes written, and sends them on
// to the disk as they come (writeBehind). Through Read it hashes the bytes read; the caller
// compares hashed with what was written.
type hashingReader struct {
	r      io.Reader
	h      hash.Hash
	buf    []byte
	hashed int64
	// offset is where the upload's file ends when the copy starts.
	offset int64
}

func (r *hashingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.sum(p[:n])
	return n, err
}

// WriteTo implements io.WriterTo.
func (r *hashingReader) WriteTo(w io.Writer) (int64, error) {
	var wb *writeBehind
	if f, ok := w.(*os.File); ok {
		wb = newWriteBehind(f, r.offset)
	}
	var written int64
	for {
		nr, rerr := r.r.Read(r.buf)
		if nr > 0 {
			nw, werr := w.Write(r.buf[:nr])
			r.sum(r.buf[:nw])
			if wb != nil {
				wb.wrote(nw)
			}
			written += int64(nw)
			if werr != nil {
				return written, werr
			}
			if nw < nr {
				return written, io.ErrShortWrite
			}
		}
		if errors.Is(rerr, io.EOF) {
			return written, nil
		}
		if rerr != nil {
			return written, rerr
		}
	}
}

func (r *hashingReader) sum(p []byte) {
	if r.h != nil && len(p) > 0 {
		_, _ = r.h.Write(p)
		r.hashed += int64(len(p))
	}
}

func (t *tusServer) hashPath(id string) string { return filepath.Join(t.dir, id+hashSuffix) }

// resumeHash returns the sha256 state of an upload's first offset bytes, or nil when it is
// not known (no state file, or one for another offset).
func (t *tusServer) resumeHash(id string, offset int64) hash.Hash {
	if offset == 0 {
		return sha256.New()
	}
	h, at, ok := t.readHash(id)
	if !ok || at != offset {
		return nil
	}
	return h
}

// readHash reads an upload's state file: the digest and the offset it covers.
func (t *tusServer) readHash(id string) (hash.Hash, int64, bool) {
	b, err := os.ReadFile(t.hashPath(id))
	if err != nil {
		return nil, 0, false
	}
	var st hashState
	if err := json.Unmarshal(b, &st); err != nil || st.Offset <= 0 {
		return nil, 0, false
	}
	h := sha256.New()
	u, ok := h.(encoding.BinaryUnmarshaler)
	if !ok || u.UnmarshalBinary(st.Digest) != nil {
		return nil, 0, false
	}
	return h, st.Offset, true
}

// saveHash writes an upload's state file. A failure is only logged: the end of the upload
// then reads the file again.
func (t *tusServer) saveHash(ctx context.Context, id string, offset int64, h hash.Hash) {
	m, ok := h.(encoding.BinaryMarshaler)
	if !ok {
		return
	}
	digest, err := m.MarshalBinary()
	if err == nil {
		var b []byte
		b, err = json.Marshal(hashState{Offset: offset, Digest: digest})
		if err == nil {
			err = os.WriteFile(t.hashPath(id), b, 0o640)
		}
	}
	if err != nil {
		t.removeHash(id)
		t.s.log.WarnContext(ctx, "upload.tus_hash_state", "video_id", id, "err", err)
	}
}

// finishedHash returns the sha256 of a complete upload of size bytes from its state file,
// if that covers every byte.
func (t *tusServer) finishedHash(id string, size int64) (string, bool) {
	h, at, ok := t.readHash(id)
	if !ok || at != size {
		return "", false
	}
	return hex.EncodeToString(h.Sum(nil)), true
}

func (t *tusServer) removeHash(id string) { _ = os.Remove(t.hashPath(id)) }

// unwrapUpload returns the file store's own upload under a hashingUpload, which the file
// store's other interfaces (termination) need.
func unwrapUpload(up handler.Upload) handler.Upload {
	if h, ok := up.(hashingUpload); ok {
		return h.Upload
	}
	return up
}

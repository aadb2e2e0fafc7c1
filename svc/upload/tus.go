package upload

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"connectrpc.com/connect"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	uploadv1 "github.com/reelway/reelway/gen/reelway/upload/v1"
	"github.com/reelway/reelway/svc/events"
	"github.com/reelway/reelway/svc/rpc"
	"github.com/tus/tusd/v2/pkg/filelocker"
	"github.com/tus/tusd/v2/pkg/filestore"
	"github.com/tus/tusd/v2/pkg/handler"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TusPath is where the resumable (tus 1.0) endpoint is mounted: POST TusPath creates an
// upload, TusPath+<video id> is the upload's URL (HEAD, PATCH, DELETE). The gateway routes
// the whole /v1/uploads/ prefix here.
const TusPath = "/v1/uploads/tus/"

// DefaultExpiry is how long a tus upload may sit without new bytes when Config.Expiry is
// zero. An upload that expires is deleted and its video marked FAILED ("upload expired").
const DefaultExpiry = 24 * time.Hour

const (
	// tusDirName is the tus store's folder in the data directory: <id> holds the bytes
	// received so far, <id>.info tusd's record of the upload, <id>.lock its lock. It is on
	// the same file system as <data>/uploads, so a finished file is renamed, not copied.
	tusDirName = "tus"
	// spoolDirName, inside the tus folder, holds PATCH bodies while their checksum is
	// verified. The leading dot keeps it apart from upload ids.
	spoolDirName = ".spool"

	// Keys the service adds to the Storage map of an upload's .info file; tusd keeps them
	// and never shows them to clients. storageState is "" while bytes arrive,
	// stateStored once the file is at <data>/uploads/<id>/source, stateDone once the video
	// is PROCESSING and upload.completed is out.
	storageState  = "ReelwayState"
	storageSHA256 = "ReelwaySHA256"
	stateStored   = "stored"
	stateDone     = "done"
	// storageOwner carries the verified owner from the creation hook (or CreateUpload) to
	// the store that creates the video; clients cannot set it, and it is not kept.
	storageOwner = "ReelwayOwner"

	// Failure reasons recorded on the video.
	reasonCancelled = "upload cancelled"
	reasonExpired   = "upload expired"

	// tusStepTimeout bounds one call to the metadata service or the event bus made for a
	// tus upload. Those calls are detached from the request, so a client hanging up at
	// the last byte cannot leave a stored file without its record and event.
	tusStepTimeout = 15 * time.Second
	// tusResumable is the only tus version served.
	tusResumable = "1.0.0"
	// tusOctetStream is the Content-Type of tus request bodies.
	tusOctetStream = "application/offset+octet-stream"
	// maxFiletypeLen bounds the optional filetype metadata.
	maxFiletypeLen = 255
)

// Errors of the tus endpoint. Each maps to one HTTP status in tusError.
var (
	// ErrChecksumMismatch means a request body does not match its Upload-Checksum; none of
	// it was stored (tus status 460).
	ErrChecksumMismatch = errors.New("upload: checksum mismatch")
	// ErrChecksumAlgorithm means Upload-Checksum names an algorithm the server does not
	// support (Tus-Checksum-Algorithm lists the supported ones).
	ErrChecksumAlgorithm = errors.New("upload: unsupported checksum algorithm")
	// ErrUploadComplete means a finished upload cannot be terminated: its bytes are the
	// video's source now, which is deleted with the video.
	ErrUploadComplete = errors.New("upload: upload is complete")
	// ErrVideoGone means the video of an upload was deleted before its last byte arrived.
	ErrVideoGone = errors.New("upload: video was deleted")
	// ErrNoUpload means the upload id names no upload.
	ErrNoUpload = errors.New("upload: upload not found")
)

// tusServer is the tus endpoint: the tusd handler over a file store in <data>/tus, behind
// the service's own middleware (id check, size check, checksum, expiration headers), with
// hooks that keep the video record in step with the upload.
type tusServer struct {
	s       *Service
	dir     string
	spool   string
	files   filestore.FileStore
	locker  filelocker.FileLocker
	handler *handler.Handler
}

// newTus prepares the tus store and handler under the data directory.
func (s *Service) newTus() (*tusServer, error) {
	dir, err := filepath.Abs(filepath.Join(s.cfg.DataDir, tusDirName))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStorage, err)
	}
	t := &tusServer{s: s, dir: dir, spool: filepath.Join(dir, spoolDirName)}
	if err := os.MkdirAll(t.spool, 0o750); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStorage, err)
	}
	t.files = filestore.New(dir)
	t.files.DirModePerm, t.files.FileModePerm = 0o750, 0o640
	// Lock files on disk, so upload processes sharing the data directory on one host
	// never write one upload at once. A request for a locked upload asks the holder to let
	// go; the holder checks every HolderPollInterval.
	t.locker = filelocker.New(dir)
	t.locker.HolderPollInterval = 250 * time.Millisecond
	t.locker.AcquirerPollInterval = 100 * time.Millisecond

	store := &tusStore{t: t}
	composer := handler.NewStoreComposer()
	composer.UseCore(store)
	composer.UseTerminater(store)
	composer.UseLocker(t.locker)
	h, err := handler.NewHandler(handler.Config{
		StoreComposer:   composer,
		MaxSize:         s.cfg.MaxBytes,
		BasePath:        TusPath,
		DisableDownload: true,
		// The gateway owns the browser policy.
		Cors: &handler.CorsConfig{Disable: true},
		// Location URLs name the gateway the client called, not this instance.
		RespectForwardedHeaders:    true,
		PreUploadCreateCallback:    t.preCreate,
		PreFinishResponseCallback:  t.preFinish,
		PreUploadTerminateCallback: t.preTerminate,
		// How long a body may stall before the request is dropped (the bytes received so
		// far are kept).
		NetworkTimeout: s.cfg.IdleTimeout,
		Logger:         newTusLogger(s.log),
	})
	if err != nil {
		return nil, fmt.Errorf("upload: tus handler: %w", err)
	}
	t.handler = h
	return t, nil
}

// mount adds the tus routes: TusPath and everything under it.
func (t *tusServer) mount(srv *rpc.Server) {
	h := http.StripPrefix(strings.TrimSuffix(TusPath, "/"), http.HandlerFunc(t.serve))
	srv.Handle(TusPath, h)
	srv.Handle(strings.TrimSuffix(TusPath, "/"), h)
}

// serve checks what tusd does not (the upload id's form, the declared size against the
// limit, Upload-Checksum), adds the checksum and expiration extensions' headers, and
// hands the request to tusd.
func (t *tusServer) serve(w http.ResponseWriter, r *http.Request) {
	// Clients that cannot send PATCH or DELETE tunnel them through POST; tusd honours the
	// override too, but the checks below must see the real method.
	if m := r.Header.Get("X-HTTP-Method-Override"); r.Method == http.MethodPost && m != "" {
		r.Method = m
		r.Header.Del("X-HTTP-Method-Override")
	}
	id := strings.Trim(r.URL.Path, "/")
	if id != "" && !validID(id) {
		t.writeError(w, r, fmt.Errorf("%w: %q is not an upload id", ErrNoUpload, truncate(id, 80)))
		return
	}
	creation := r.Method == http.MethodPost && id == ""
	if creation {
		if err := t.checkDeclaredSize(r); err != nil {
			t.writeError(w, r, err)
			return
		}
	}
	tw := &tusWriter{ResponseWriter: w, method: r.Method, expires: time.Now().Add(t.s.cfg.Expiry)}
	if carriesBytes(r, id) {
		if creation {
			if err := checkCreationBody(r); err != nil {
				t.writeError(w, r, err)
				return
			}
		} else if err := t.checkComplete(w, r, id); err != nil {
			t.writeError(w, r, err)
			return
		}
		if wantsChecksum(r, id) {
			cleanup, err := t.verifyChecksum(tw, r)
			if err != nil {
				t.writeError(tw, r, err)
				return
			}
			defer cleanup()
			if creation {
				// The spooled body's length is known now.
				if err := checkCreationBody(r); err != nil {
					t.writeError(tw, r, err)
					return
				}
			}
		} else {
			r.Body = &stallBody{body: r.Body, idle: t.s.cfg.IdleTimeout}
		}
		if r.ContentLength < 0 || creation {
			b := newBoundedBody(r.Body, creation)
			r.Body = b
			r = r.WithContext(context.WithValue(r.Context(), boundedBodyKey{}, b))
		}
	}
	t.handler.ServeHTTP(tw, r)
}

// checkComplete refuses a PATCH that brings bytes to an upload that has all of its bytes
// already. tusd answers it 204 without reading the body, so the bytes would be dropped
// without a word; they are more than the upload needs (413, as for any body that runs
// past its upload). An empty PATCH at the end still gets tusd's 204, which tells a client
// that lost the last answer that the upload is done.
func (t *tusServer) checkComplete(w http.ResponseWriter, r *http.Request, id string) error {
	if r.ContentLength == 0 {
		return nil
	}
	up, err := t.files.GetUpload(r.Context(), id)
	if err != nil {
		return nil // tusd answers for an unknown upload
	}
	info, err := up.GetInfo(r.Context())
	if err != nil || info.SizeIsDeferred || info.Offset < info.Size || r.Header.Get("Upload-Offset") != strconv.FormatInt(info.Size, 10) {
		return nil // tusd answers, a wrong offset with 409
	}
	if r.ContentLength < 0 {
		// A body without a length may be empty: only a byte that arrives is too many.
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Now().Add(t.s.cfg.IdleTimeout))
		var one [1]byte
		n, err := io.ReadFull(r.Body, one[:])
		_ = rc.SetReadDeadline(time.Time{})
		switch {
		case n == 0 && err == io.EOF:
			r.Body = http.NoBody
			return nil
		case n == 0:
			// Stalled (perhaps after announcing a chunk) or broken: not an empty body.
			if timedOut(err) {
				return idleError(t.s.cfg.IdleTimeout)
			}
			return fmt.Errorf("%w: %w", ErrRead, err)
		}
	}
	return fmt.Errorf("%w: the upload has all its %d bytes already", ErrSizeExceeded, info.Size)
}

// checkDeclaredSize refuses a creation whose Upload-Length is over the limit before any
// byte is stored, saying what the limit is (tusd would only say "maximum size exceeded").
func (t *tusServer) checkDeclaredSize(r *http.Request) error {
	n, err := strconv.ParseInt(r.Header.Get("Upload-Length"), 10, 64)
	if err != nil {
		return nil // tusd explains a missing or malformed Upload-Length
	}
	if n > t.s.cfg.MaxBytes {
		return fmt.Errorf("%w: Upload-Length %d is over the limit of %d bytes", ErrTooLarge, n, t.s.cfg.MaxBytes)
	}
	return nil
}

// preCreate validates a creation request's metadata, verifies its bearer token (the owner),
// keeps only the fields the platform uses, and names the upload with a fresh video id, so
// the upload URL and the video share it. It runs before tusd stores anything, a
// creation-with-upload body included (serve has checked that body's Content-Length
// against Upload-Length already).
func (t *tusServer) preCreate(hook handler.HookEvent) (handler.HTTPResponse, handler.FileInfoChanges, error) {
	if hook.Upload.Size <= 0 {
		return handler.HTTPResponse{}, handler.FileInfoChanges{}, tusError(fmt.Errorf("%w: Upload-Length must be at least 1 byte", ErrEmpty))
	}
	if err := checkMetadataHeader(hook.HTTPRequest.Header.Get("Upload-Metadata")); err != nil {
		return handler.HTTPResponse{}, handler.FileInfoChanges{}, tusError(err)
	}
	meta, kept, err := tusMetadata(hook.Upload.MetaData)
	if err != nil {
		return handler.HTTPResponse{}, handler.FileInfoChanges{}, tusError(err)
	}
	owner, err := t.s.owner(hook.Context, hook.HTTPRequest.Header, meta.GetVisibility())
	if err != nil {
		return handler.HTTPResponse{}, handler.FileInfoChanges{}, t.httpError(hook.Context, err)
	}
	return handler.HTTPResponse{}, handler.FileInfoChanges{ID: newVideoID(), MetaData: kept, Storage: map[string]string{storageOwner: owner}}, nil
}

// preFinish runs when the last byte is in, before the final request is answered: it
// hands the file to the pipeline (see finish).
func (t *tusServer) preFinish(hook handler.HookEvent) (handler.HTTPResponse, error) {
	if err := t.finish(hook.Context, hook.Upload.ID); err != nil {
		return handler.HTTPResponse{}, t.httpError(hook.Context, err)
	}
	return handler.HTTPResponse{}, nil
}

// preTerminate refuses to terminate a complete upload: its bytes are the video's source.
func (t *tusServer) preTerminate(hook handler.HookEvent) (handler.HTTPResponse, error) {
	if hook.Upload.Storage[storageState] != "" || (!hook.Upload.SizeIsDeferred && hook.Upload.Offset >= hook.Upload.Size) {
		return handler.HTTPResponse{}, tusError(fmt.Errorf("%w: delete the video instead", ErrUploadComplete))
	}
	return handler.HTTPResponse{}, nil
}

// checkMetadataHeader refuses an Upload-Metadata header tusd would read only in part: tusd
// drops a pair whose value is not base64, or that has more than one space, without a word,
// and a dropped "visibility private" would make a video public.
//
// It also refuses what would be read otherwise than meant: a key given twice (tusd keeps
// the last), a key of the platform's in another case ("VISIBILITY", which tusd would
// ignore) and a visibility without a value (which would be public).
func checkMetadataHeader(h string) error {
	seen := map[string]bool{}
	for pair := range strings.SplitSeq(h, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		key, value, hasValue := strings.Cut(pair, " ")
		if strings.Contains(value, " ") || strings.ContainsFunc(key, func(r rune) bool { return unicode.IsSpace(r) || r == '=' }) {
			return fmt.Errorf("%w: Upload-Metadata %q: want \"key <base64 value>\", one space between them", ErrInvalid, pair)
		}
		if _, err := base64.StdEncoding.DecodeString(value); hasValue && err != nil {
			return fmt.Errorf("%w: Upload-Metadata %s: the value is not padded standard base64", ErrInvalid, key)
		}
		if seen[key] {
			return fmt.Errorf("%w: Upload-Metadata %s is given more than once", ErrInvalid, key)
		}
		seen[key] = true
		if err := checkFieldName(key); err != nil {
			return fmt.Errorf("%w (Upload-Metadata)", err)
		}
		if key == "visibility" && value == "" {
			return fmt.Errorf("%w: Upload-Metadata visibility needs a value (public, unlisted or private)", ErrInvalid)
		}
	}
	return nil
}

// checkFieldName refuses a key that looks like the title or the visibility but would be
// ignored without a word ("Visibility", "visibility " with a space): the video would get
// another title or, worse, be public. Other keys are free (clients add their own, in
// their own case: fileName, relativePath).
func checkFieldName(key string) error {
	switch lower := strings.ToLower(strings.TrimSpace(key)); lower {
	case "title", "visibility":
		if key != lower {
			return fmt.Errorf("%w: field %q must be spelled %q", ErrInvalid, key, lower)
		}
	}
	return nil
}

// tusMetadata reads Upload-Metadata (already base64-decoded by tusd): title is required;
// filename (or "name", as some clients send it), description, filetype and visibility
// (public, unlisted or private) are optional. It returns the video's metadata and the map
// kept with the upload; any other key is dropped. Filenames are kept as metadata only and
// never become paths.
func tusMetadata(m handler.MetaData) (*uploadv1.UploadMetadata, handler.MetaData, error) {
	filename := m["filename"]
	if filename == "" {
		filename = m["name"]
	}
	vis, err := parseVisibility(m["visibility"])
	if err != nil {
		return nil, nil, fmt.Errorf("%w (Upload-Metadata)", err)
	}
	kept := handler.MetaData{"title": m["title"], "filename": filename, "description": m["description"], "filetype": m["filetype"],
		"visibility": visibilityName(vis)}
	for k, v := range kept {
		if !utf8.ValidString(v) {
			return nil, nil, fmt.Errorf("%w: Upload-Metadata %s is not UTF-8 text", ErrInvalid, k)
		}
		if v == "" {
			delete(kept, k)
		}
	}
	if kept["title"] == "" {
		return nil, nil, fmt.Errorf("%w: Upload-Metadata must carry a title (\"title <base64 of the title>\")", ErrInvalid)
	}
	if utf8.RuneCountInString(kept["filetype"]) > maxFiletypeLen {
		return nil, nil, fmt.Errorf("%w: Upload-Metadata filetype is longer than %d characters", ErrInvalid, maxFiletypeLen)
	}
	meta := &uploadv1.UploadMetadata{Title: kept["title"], Filename: kept["filename"], Description: kept["description"], Visibility: vis}
	if err := validateMetadata(meta); err != nil {
		return nil, nil, err
	}
	return meta, kept, nil
}

// tusStore is the tus data store: tusd's file store, plus the video record. An upload is
// created together with its video (UPLOADING); terminating one fails its video.
type tusStore struct{ t *tusServer }

var (
	_ handler.DataStore           = (*tusStore)(nil)
	_ handler.TerminaterDataStore = (*tusStore)(nil)
)

// NewUpload implements handler.DataStore.
func (st *tusStore) NewUpload(ctx context.Context, info handler.FileInfo) (handler.Upload, error) {
	up, err := st.t.create(ctx, info)
	if err != nil {
		return nil, st.t.httpError(ctx, err)
	}
	return hashingUpload{Upload: up, t: st.t}, nil
}

// GetUpload implements handler.DataStore.
func (st *tusStore) GetUpload(ctx context.Context, id string) (handler.Upload, error) {
	up, err := st.t.files.GetUpload(ctx, id)
	if err != nil {
		return nil, err
	}
	return hashingUpload{Upload: up, t: st.t}, nil
}

// AsTerminatableUpload implements handler.TerminaterDataStore.
func (st *tusStore) AsTerminatableUpload(up handler.Upload) handler.TerminatableUpload {
	return cancellation{t: st.t, up: up}
}

// cancellation terminates an upload on the client's DELETE.
type cancellation struct {
	t  *tusServer
	up handler.Upload
}

// Terminate records the cancellation on the video first (so a metadata outage fails the
// DELETE, which the client retries, rather than leaving an UPLOADING video without
// bytes), then frees the bytes.
func (c cancellation) Terminate(ctx context.Context) error {
	info, err := c.up.GetInfo(ctx)
	if err != nil {
		return err
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tusStepTimeout)
	defer cancel()
	if err := c.t.failVideo(fctx, info.ID, reasonCancelled); err != nil {
		return c.t.httpError(ctx, err)
	}
	if err := c.t.files.AsTerminatableUpload(unwrapUpload(c.up)).Terminate(ctx); err != nil {
		return c.t.httpError(ctx, fmt.Errorf("%w: %w", ErrStorage, err))
	}
	c.t.removeHash(info.ID)
	c.t.publishFailed(fctx, info.ID, reasonCancelled)
	c.t.s.log.InfoContext(ctx, "upload.tus_cancelled", "video_id", info.ID, "offset", info.Offset)
	return nil
}

// create makes an empty tus upload and its video. info carries the id, size and kept
// metadata, and in Storage the verified owner. On failure nothing is left behind.
func (t *tusServer) create(ctx context.Context, info handler.FileInfo) (handler.Upload, error) {
	meta, kept, err := tusMetadata(info.MetaData)
	if err != nil {
		return nil, err
	}
	if !validID(info.ID) {
		return nil, fmt.Errorf("%w: upload id %q", ErrInvalid, info.ID)
	}
	owner := info.Storage[storageOwner]
	if err := needsOwner(meta.GetVisibility(), owner); err != nil {
		return nil, err
	}
	info.MetaData = kept
	info.Storage = nil
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tusStepTimeout)
	defer cancel()
	if err := t.s.pub.Publish(fctx, events.UploadStarted(Source, info.ID, meta.GetFilename())); err != nil {
		return nil, fmt.Errorf("%w: publish upload.started: %w", ErrUnavailable, err)
	}
	up, err := t.files.NewUpload(ctx, info)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStorage, err)
	}
	video := &metadatav1.Video{
		Id:          info.ID,
		Title:       meta.GetTitle(),
		Description: meta.GetDescription(),
		OwnerId:     owner,
		Visibility:  recordedVisibility(meta.GetVisibility()),
		Status:      metadatav1.VideoStatus_VIDEO_STATUS_UPLOADING,
	}
	if _, err := t.s.videos.CreateVideo(fctx, &metadatav1.CreateVideoRequest{Video: video}); err != nil {
		_ = t.files.AsTerminatableUpload(up).Terminate(fctx)
		if c := connect.CodeOf(err); c == connect.CodeDeadlineExceeded || c == connect.CodeUnknown {
			// The record may exist even though the answer was lost.
			_ = t.failVideo(fctx, info.ID, "upload aborted: "+err.Error())
		}
		if connect.CodeOf(err) == connect.CodeInvalidArgument {
			return nil, fmt.Errorf("%w: create video: %w", ErrInvalid, err)
		}
		return nil, fmt.Errorf("%w: create video: %w", ErrUnavailable, err)
	}
	t.s.log.InfoContext(ctx, "upload.tus_created", "video_id", info.ID, "size", info.Size,
		"filename", meta.GetFilename(), "title", meta.GetTitle(), "owner_id", owner, "visibility", visibilityName(recordedVisibility(meta.GetVisibility())))
	return up, nil
}

// CreateUpload implements UploadService.CreateUpload: the video, owned by the caller whose
// bearer token the request carries, and an empty tus upload for its bytes, which the client
// then sends with PATCH requests.
func (s *Service) CreateUpload(ctx context.Context, req *uploadv1.CreateUploadRequest) (*uploadv1.CreateUploadResponse, error) {
	if s.tus == nil {
		return nil, s.toConnect(ctx, errors.New("upload: tus endpoint not mounted"))
	}
	if req.GetSizeBytes() > s.cfg.MaxBytes {
		return nil, s.toConnect(ctx, fmt.Errorf("%w: %d bytes announced, at most %d allowed", ErrTooLarge, req.GetSizeBytes(), s.cfg.MaxBytes))
	}
	meta := req.GetMetadata()
	var h http.Header
	if ci, ok := connect.CallInfoForHandlerContext(ctx); ok {
		h = ci.RequestHeader()
	}
	owner, err := s.owner(ctx, h, meta.GetVisibility())
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	id := newVideoID()
	info := handler.FileInfo{
		ID:   id,
		Size: req.GetSizeBytes(),
		MetaData: handler.MetaData{
			"title":       meta.GetTitle(),
			"filename":    meta.GetFilename(),
			"description": meta.GetDescription(),
			"visibility":  visibilityName(meta.GetVisibility()),
		},
		Storage: map[string]string{storageOwner: owner},
	}
	if _, err := s.tus.create(ctx, info); err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return &uploadv1.CreateUploadResponse{
		VideoId:    id,
		UploadUrl:  TusPath + id,
		ExpireTime: timestamppb.New(time.Now().Add(s.cfg.Expiry)),
	}, nil
}

// finish hands a complete upload to the pipeline, as POST /v1/uploads does: the file
// moves (a rename) to <data>/uploads/<id>/source, its sha256 is computed, the video
// becomes PROCESSING with size and sha256, and upload.completed is published. The caller
// holds the upload's lock. Each step is recorded in the .info file, so finish resumes
// where a failed attempt stopped: the cleanup loop retries it.
func (t *tusServer) finish(ctx context.Context, id string) error {
	info, err := t.readInfo(id)
	if err != nil {
		return err
	}
	switch info.Storage[storageState] {
	case stateDone:
		return nil
	case "":
		if err := t.store(ctx, &info); err != nil {
			return err
		}
	}
	log := t.s.log.With("video_id", id)
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tusStepTimeout)
	defer cancel()
	size, sum := info.Size, info.Storage[storageSHA256]
	_, err = t.s.videos.UpdateVideo(fctx, &metadatav1.UpdateVideoRequest{
		Video:      &metadatav1.Video{Id: id, Status: metadatav1.VideoStatus_VIDEO_STATUS_PROCESSING, SizeBytes: size, Sha256: sum},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"status", "size_bytes", "sha256"}},
	})
	if connect.CodeOf(err) == connect.CodeNotFound {
		// Deleted while uploading: nobody wants the bytes.
		t.remove(id)
		_ = os.RemoveAll(filepath.Dir(t.sourcePath(id)))
		log.InfoContext(ctx, "upload.tus_discarded", "reason", "video deleted")
		return fmt.Errorf("%w: %s", ErrVideoGone, id)
	}
	if err != nil {
		log.WarnContext(ctx, "upload.tus_update_video", "err", err)
		return fmt.Errorf("%w: update video: %w (the upload is stored and will be processed later)", ErrUnavailable, err)
	}
	if err := t.s.pub.Publish(fctx, events.UploadCompleted(Source, id, size, sum)); err != nil {
		log.WarnContext(ctx, "upload.publish_completed", "err", err)
		return fmt.Errorf("%w: publish upload.completed: %w (the upload is stored and will be processed later)", ErrUnavailable, err)
	}
	info.Storage[storageState] = stateDone
	if err := t.writeInfo(info); err != nil {
		// Only costs a repeated event (the worker tolerates duplicates) if retried.
		log.WarnContext(ctx, "upload.tus_info", "err", err)
	}
	log.InfoContext(ctx, "upload.completed", "size", size, "sha256", sum, "via", "tus")
	return nil
}

// store moves a complete upload's bytes to the video's source path, durably, and records
// the move and the file's sha256 in info. The sha256 comes from the state the PATCHes
// carried forward; only without one (it was lost, or the upload predates it) is the file
// read again.
func (t *tusServer) store(ctx context.Context, info *handler.FileInfo) error {
	id := info.ID
	bin, src := filepath.Join(t.dir, id), t.sourcePath(id)
	if _, err := os.Stat(bin); errors.Is(err, os.ErrNotExist) {
		// Moved by an attempt that stopped before recording it.
		if _, err := os.Stat(src); err != nil {
			return fmt.Errorf("%w: upload %s has no bytes: %w", ErrStorage, id, err)
		}
	} else {
		if err := syncFile(bin); err != nil {
			return fmt.Errorf("%w: sync: %w", ErrStorage, err)
		}
		if err := os.MkdirAll(filepath.Dir(src), 0o750); err != nil {
			return fmt.Errorf("%w: %w", ErrStorage, err)
		}
		if err := os.Rename(bin, src); err != nil {
			return fmt.Errorf("%w: move upload: %w", ErrStorage, err)
		}
		syncDir(filepath.Dir(src))
		syncDir(t.dir)
	}
	sum, ok := t.finishedHash(id, info.Size)
	size := fileSize(src)
	if !ok {
		t.s.log.InfoContext(ctx, "upload.tus_rehash", "video_id", id, "size", info.Size)
		var err error
		size, sum, err = t.s.hashFile(src)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrStorage, err)
		}
	}
	if size != info.Size {
		return fmt.Errorf("%w: stored %d bytes, the upload has %d", ErrStorage, size, info.Size)
	}
	if info.Storage == nil {
		info.Storage = map[string]string{}
	}
	// tusd reads the bytes from Storage's path: HEAD still reports the full offset, so a
	// client whose last answer was lost learns that the upload is complete.
	info.Storage[filestore.StorageKeyPath] = src
	info.Storage[storageState] = stateStored
	info.Storage[storageSHA256] = sum
	info.Offset = size
	if err := t.writeInfo(*info); err != nil {
		return fmt.Errorf("%w: %w", ErrStorage, err)
	}
	// The sha256 is in .info now.
	t.removeHash(id)
	return nil
}

// failVideo marks an upload's video FAILED with reason. A video that no longer exists
// needs nothing.
func (t *tusServer) failVideo(ctx context.Context, id, reason string) error {
	_, err := t.s.videos.UpdateVideo(ctx, &metadatav1.UpdateVideoRequest{
		Video:      &metadatav1.Video{Id: id, Status: metadatav1.VideoStatus_VIDEO_STATUS_FAILED, FailureReason: truncate(reason, maxReasonLen)},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"status", "failure_reason"}},
	})
	if err != nil && connect.CodeOf(err) != connect.CodeNotFound {
		return fmt.Errorf("%w: mark video failed: %w", ErrUnavailable, err)
	}
	return nil
}

// publishFailed announces an upload that will never complete. It is informational (the
// video record says FAILED already), so a failure is only logged.
func (t *tusServer) publishFailed(ctx context.Context, id, reason string) {
	if err := t.s.pub.Publish(ctx, events.UploadFailed(Source, id, reason)); err != nil {
		t.s.log.WarnContext(ctx, "upload.publish_failed", "video_id", id, "err", err)
	}
}

func (t *tusServer) sourcePath(id string) string {
	return filepath.Join(t.s.cfg.DataDir, "uploads", id, "source")
}

func (t *tusServer) infoPath(id string) string { return filepath.Join(t.dir, id+".info") }

// readInfo reads an upload's .info file as tusd wrote it.
func (t *tusServer) readInfo(id string) (handler.FileInfo, error) {
	var info handler.FileInfo
	b, err := os.ReadFile(t.infoPath(id))
	if errors.Is(err, os.ErrNotExist) {
		return info, fmt.Errorf("%w: %s", ErrNoUpload, id)
	}
	if err != nil {
		return info, fmt.Errorf("%w: %w", ErrStorage, err)
	}
	if err := json.Unmarshal(b, &info); err != nil {
		return info, fmt.Errorf("%w: upload info %s: %w", ErrStorage, id, err)
	}
	return info, nil
}

// writeInfo replaces an upload's .info file atomically, in tusd's format (FileInfo as JSON).
func (t *tusServer) writeInfo(info handler.FileInfo) error {
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(t.dir, info.ID+".info.tmp-*")
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		_ = f.Close()
		_ = os.Remove(f.Name())
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		_ = os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(f.Name())
		return err
	}
	if err := os.Chmod(f.Name(), 0o640); err != nil {
		_ = os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), t.infoPath(info.ID)); err != nil {
		_ = os.Remove(f.Name())
		return err
	}
	return nil
}

// remove deletes an upload's bytes (while still in the tus folder), its sha256 state and
// its .info file.
func (t *tusServer) remove(id string) {
	_ = os.Remove(filepath.Join(t.dir, id))
	t.removeHash(id)
	_ = os.Remove(t.infoPath(id))
}

// tusError turns a domain error into the tus answer: the status of its Connect code as the
// plain route uses it, with tusd's plain-text "ERR_...: reason" body. It is the one place
// the tus endpoint maps errors.
func tusError(err error) handler.Error {
	var herr handler.Error
	if errors.As(err, &herr) {
		return herr
	}
	switch {
	case errors.Is(err, ErrChecksumMismatch):
		return handler.NewError("ERR_CHECKSUM_MISMATCH", err.Error(), 460)
	case errors.Is(err, ErrChecksumAlgorithm):
		return handler.NewError("ERR_UNSUPPORTED_CHECKSUM_ALGORITHM", err.Error(), http.StatusBadRequest)
	case errors.Is(err, ErrUploadComplete):
		return handler.NewError("ERR_UPLOAD_COMPLETE", err.Error(), http.StatusForbidden)
	case errors.Is(err, ErrVideoGone):
		return handler.NewError("ERR_VIDEO_DELETED", err.Error(), http.StatusGone)
	case errors.Is(err, ErrNoUpload):
		return handler.NewError("ERR_UPLOAD_NOT_FOUND", err.Error(), http.StatusNotFound)
	case errors.Is(err, ErrIdle):
		return handler.NewError("ERR_READ_TIMEOUT", err.Error(), http.StatusRequestTimeout)
	case errors.Is(err, ErrSizeExceeded):
		return handler.NewError("ERR_UPLOAD_SIZE_EXCEEDED", err.Error(), http.StatusRequestEntityTooLarge)
	}
	code := connectCode(err)
	msg := err.Error()
	if code == connect.CodeInternal {
		msg = "upload: internal error"
	}
	out := handler.NewError("ERR_"+strings.ToUpper(code.String()), msg, httpStatus(code))
	if code == connect.CodeUnauthenticated {
		out.HTTPResponse.Header["WWW-Authenticate"] = wwwAuthenticate
	}
	return out
}

// httpError is tusError that logs internal faults, whose details callers do not get.
func (t *tusServer) httpError(ctx context.Context, err error) handler.Error {
	herr := tusError(err)
	if herr.HTTPResponse.StatusCode >= http.StatusInternalServerError && herr.HTTPResponse.StatusCode != http.StatusServiceUnavailable {
		t.s.log.ErrorContext(ctx, "upload.internal", "err", err)
	}
	return herr
}

// writeError answers a request the service refuses before tusd sees it, the way tusd
// answers.
func (t *tusServer) writeError(w http.ResponseWriter, r *http.Request, err error) {
	herr := t.httpError(r.Context(), err)
	h := w.Header()
	h.Set("Tus-Resumable", tusResumable)
	h.Set("Content-Type", "text/plain; charset=utf-8")
	if c := herr.HTTPResponse.StatusCode; c == http.StatusRequestEntityTooLarge || c == http.StatusRequestTimeout {
		// The rest of the body is not wanted (or not coming).
		h.Set("Connection", "close")
	}
	w.WriteHeader(herr.HTTPResponse.StatusCode)
	if r.Method != http.MethodHead {
		_, _ = io.WriteString(w, herr.HTTPResponse.Body)
	}
}

// tusWriter adds the headers of the extensions served outside tusd: checksum and
// expiration in the OPTIONS answer's Tus-Extension, Tus-Checksum-Algorithm, and
// Upload-Expires on successful creations and PATCHes.
type tusWriter struct {
	http.ResponseWriter
	method  string
	expires time.Time
	wrote   bool
}

func (w *tusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.wrote = true
		h := w.Header()
		if ext := h.Get("Tus-Extension"); ext != "" {
			h.Set("Tus-Extension", ext+",checksum,expiration")
			h.Set("Tus-Checksum-Algorithm", checksumAlgorithms)
		}
		if code >= 200 && code < 300 && (w.method == http.MethodPost || w.method == http.MethodPatch) {
			h.Set("Upload-Expires", w.expires.UTC().Format(http.TimeFormat))
		}
		if code == http.StatusMethodNotAllowed {
			h.Set("Allow", tusAllow(h.Get("Allow")))
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *tusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// tusAllow corrects the Allow list of tusd's 405: tusd names GET whether or not
// downloads are served (they are not here), and leaves out OPTIONS, which it answers.
func tusAllow(allow string) string {
	var methods []string
	for m := range strings.SplitSeq(allow, ",") {
		if m = strings.TrimSpace(m); m != "" && m != http.MethodGet && m != http.MethodOptions {
			methods = append(methods, m)
		}
	}
	return strings.Join(append(methods, http.MethodOptions), ", ")
}

// Unwrap lets http.ResponseController (tusd sets read deadlines) reach the connection.
func (w *tusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// validID reports whether s has the form of a video id, ^[A-Za-z0-9_-]{1,64}$, so it is
// safe as a file name.
func validID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// hashFile returns a file's size and sha256 in lower-case hex.
func (s *Service) hashFile(path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	buf := s.buffer()
	defer s.release(buf)
	n, err := io.CopyBuffer(h, f, *buf)
	if err != nil {
		return 0, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// syncFile makes a file's bytes durable before it is renamed into place.
func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

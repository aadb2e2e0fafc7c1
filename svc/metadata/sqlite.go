package metadata

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
	"github.com/reelway/reelway/svc/sqlitedb"
)

// SQLite is the Store backed by one SQLite file in WAL mode.
type SQLite struct {
	db *sql.DB
}

var _ Store = (*SQLite)(nil)

// migrations are applied in order; entry i is schema version i+1. Append, never edit: a
// database records the versions it has applied in schema_migrations.
func migrations() []string {
	return []string{
		`CREATE TABLE videos (
			id               TEXT PRIMARY KEY,
			title            TEXT    NOT NULL,
			description      TEXT    NOT NULL DEFAULT '',
			owner_id         TEXT    NOT NULL DEFAULT '',
			status           INTEGER NOT NULL,
			visibility       INTEGER NOT NULL,
			duration_seconds REAL    NOT NULL DEFAULT 0,
			width            INTEGER NOT NULL DEFAULT 0,
			height           INTEGER NOT NULL DEFAULT 0,
			renditions       TEXT    NOT NULL DEFAULT '[]',
			playback_path    TEXT    NOT NULL DEFAULT '',
			thumbnail_path   TEXT    NOT NULL DEFAULT '',
			size_bytes       INTEGER NOT NULL DEFAULT 0,
			sha256           TEXT    NOT NULL DEFAULT '',
			failure_reason   TEXT    NOT NULL DEFAULT '',
			tags             TEXT    NOT NULL DEFAULT '[]',
			create_time_us   INTEGER NOT NULL,
			update_time_us   INTEGER NOT NULL
		);
		CREATE INDEX videos_by_create ON videos (create_time_us DESC, id DESC);
		CREATE INDEX videos_by_status_create ON videos (status, create_time_us DESC, id DESC);`,
	}
}

// OpenSQLite opens (creating if needed) the database file at path and brings its schema up
// to date.
func OpenSQLite(ctx context.Context, path string) (*SQLite, error) {
	db, err := sqlitedb.Open(ctx, path, migrations())
	if errors.Is(err, sqlitedb.ErrNewerSchema) {
		return nil, fmt.Errorf("%w: %w", ErrSchema, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStore, err)
	}
	return &SQLite{db: db}, nil
}

// Close closes the database.
func (s *SQLite) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("%w: close: %w", ErrStore, err)
	}
	return nil
}

const videoColumns = `id, title, description, owner_id, status, visibility, duration_seconds, width, height,
	renditions, playback_path, thumbnail_path, size_bytes, sha256, failure_reason, tags,
	create_time_us, update_time_us`

// rendition is the JSON shape of a rendition in the renditions column. It is spelled out
// rather than left to protojson so the stored form stays stable across library versions.
type rendition struct {
	Name         string `json:"name"`
	Width        int32  `json:"width"`
	Height       int32  `json:"height"`
	Bandwidth    int64  `json:"bandwidth"`
	PlaylistPath string `json:"playlist_path,omitempty"`
	Codecs       string `json:"codecs,omitempty"`
}

type row struct {
	renditions, tags string
}

func encodeJSON(v *metadatav1.Video) (row, error) {
	rs := make([]rendition, 0, len(v.GetRenditions()))
	for _, r := range v.GetRenditions() {
		rs = append(rs, rendition{
			Name: r.GetName(), Width: r.GetWidth(), Height: r.GetHeight(), Bandwidth: r.GetBandwidth(),
			PlaylistPath: r.GetPlaylistPath(), Codecs: r.GetCodecs(),
		})
	}
	rj, err := json.Marshal(rs)
	if err != nil {
		return row{}, fmt.Errorf("%w: encode renditions: %w", ErrStore, err)
	}
	tags := v.GetTags()
	if tags == nil {
		tags = []string{}
	}
	tj, err := json.Marshal(tags)
	if err != nil {
		return row{}, fmt.Errorf("%w: encode tags: %w", ErrStore, err)
	}
	return row{renditions: string(rj), tags: string(tj)}, nil
}

type scanner interface {
	Scan(dest ...any) error
}

func scanVideo(sc scanner) (*metadatav1.Video, error) {
	var (
		v                  metadatav1.Video
		status, visibility int32
		renditions, tags   string
		createUS, updateUS int64
	)
	if err := sc.Scan(&v.Id, &v.Title, &v.Description, &v.OwnerId, &status, &visibility, &v.DurationSeconds,
		&v.Width, &v.Height, &renditions, &v.PlaybackPath, &v.ThumbnailPath, &v.SizeBytes, &v.Sha256,
		&v.FailureReason, &tags, &createUS, &updateUS); err != nil {
		return nil, err
	}
	v.Status = metadatav1.VideoStatus(status)
	v.Visibility = metadatav1.Visibility(visibility)
	var rs []rendition
	if err := json.Unmarshal([]byte(renditions), &rs); err != nil {
		return nil, fmt.Errorf("%w: decode renditions of %s: %w", ErrStore, v.Id, err)
	}
	for _, r := range rs {
		v.Renditions = append(v.Renditions, &metadatav1.Rendition{
			Name: r.Name, Width: r.Width, Height: r.Height, Bandwidth: r.Bandwidth,
			PlaylistPath: r.PlaylistPath, Codecs: r.Codecs,
		})
	}
	if err := json.Unmarshal([]byte(tags), &v.Tags); err != nil {
		return nil, fmt.Errorf("%w: decode tags of %s: %w", ErrStore, v.Id, err)
	}
	if len(v.Tags) == 0 {
		v.Tags = nil
	}
	v.CreateTime = timestamppb.New(time.UnixMicro(createUS))
	v.UpdateTime = timestamppb.New(time.UnixMicro(updateUS))
	return &v, nil
}

// Create implements Store.
func (s *SQLite) Create(ctx context.Context, v *metadatav1.Video) error {
	j, err := encodeJSON(v)
	if err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO videos (`+videoColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO NOTHING`,
		v.GetId(), v.GetTitle(), v.GetDescription(), v.GetOwnerId(), int32(v.GetStatus()), int32(v.GetVisibility()),
		v.GetDurationSeconds(), v.GetWidth(), v.GetHeight(), j.renditions, v.GetPlaybackPath(), v.GetThumbnailPath(),
		v.GetSizeBytes(), v.GetSha256(), v.GetFailureReason(), j.tags,
		v.GetCreateTime().AsTime().UnixMicro(), v.GetUpdateTime().AsTime().UnixMicro())
	if err != nil {
		return fmt.Errorf("%w: insert %s: %w", ErrStore, v.GetId(), err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("%w: insert %s: %w", ErrStore, v.GetId(), err)
	}
	if n == 0 {
		return fmt.Errorf("%w: %s", ErrExists, v.GetId())
	}
	return nil
}

// Get implements Store.
func (s *SQLite) Get(ctx context.Context, id string) (*metadatav1.Video, error) {
	return getVideo(ctx, s.db, id)
}

type queryRower interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func getVideo(ctx context.Context, q queryRower, id string) (*metadatav1.Video, error) {
	v, err := scanVideo(q.QueryRowContext(ctx, `SELECT `+videoColumns+` FROM videos WHERE id = ?`, id))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	case err != nil:
		return nil, fmt.Errorf("%w: get %s: %w", ErrStore, id, err)
	}
	return v, nil
}

// List implements Store.
func (s *SQLite) List(ctx context.Context, q ListQuery) ([]*metadatav1.Video, error) {
	if q.Limit <= 0 {
		return nil, fmt.Errorf("%w: list limit %d", ErrInvalid, q.Limit)
	}
	var (
		where []string
		args  []any
	)
	if q.Status != metadatav1.VideoStatus_VIDEO_STATUS_UNSPECIFIED {
		where = append(where, "status = ?")
		args = append(args, int32(q.Status))
	}
	if q.After != nil {
		where = append(where, "(create_time_us, id) < (?, ?)")
		args = append(args, q.After.CreateTime.UnixMicro(), q.After.ID)
	}
	query := `SELECT ` + videoColumns + ` FROM videos`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY create_time_us DESC, id DESC LIMIT ?"
	args = append(args, q.Limit)

	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("%w: list: %w", ErrStore, err)
	}
	defer rows.Close()
	var out []*metadatav1.Video
	for rows.Next() {
		v, err := scanVideo(rows)
		if err != nil {
			return nil, fmt.Errorf("%w: list: %w", ErrStore, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%w: list: %w", ErrStore, err)
	}
	return out, nil
}

// Update implements Store.
func (s *SQLite) Update(ctx context.Context, id string, apply func(*metadatav1.Video) (bool, error)) (*metadatav1.Video, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: begin update %s: %w", ErrStore, id, err)
	}
	defer func() { _ = tx.Rollback() }()
	v, err := getVideo(ctx, tx, id)
	if err != nil {
		return nil, err
	}
	changed, err := apply(v)
	if err != nil {
		return nil, err
	}
	if !changed {
		return v, nil
	}
	j, err := encodeJSON(v)
	if err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE videos SET
		title = ?, description = ?, owner_id = ?, status = ?, visibility = ?, duration_seconds = ?,
		width = ?, height = ?, renditions = ?, playback_path = ?, thumbnail_path = ?, size_bytes = ?,
		sha256 = ?, failure_reason = ?, tags = ?, update_time_us = ?
		WHERE id = ?`,
		v.GetTitle(), v.GetDescription(), v.GetOwnerId(), int32(v.GetStatus()), int32(v.GetVisibility()),
		v.GetDurationSeconds(), v.GetWidth(), v.GetHeight(), j.renditions, v.GetPlaybackPath(),
		v.GetThumbnailPath(), v.GetSizeBytes(), v.GetSha256(), v.GetFailureReason(), j.tags,
		v.GetUpdateTime().AsTime().UnixMicro(), id); err != nil {
		return nil, fmt.Errorf("%w: update %s: %w", ErrStore, id, err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("%w: commit update %s: %w", ErrStore, id, err)
	}
	return v, nil
}

// Delete implements Store.
func (s *SQLite) Delete(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM videos WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("%w: delete %s: %w", ErrStore, id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("%w: delete %s: %w", ErrStore, id, err)
	}
	if n == 0 {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return nil
}

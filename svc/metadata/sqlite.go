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
	"github.com/reelway/reelway/svc/sqlitedb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// SQLite is the Store backed by one SQLite file in WAL mode, with an FTS5 index for search.
type SQLite struct {
	db *sql.DB
}

var _ Store = (*SQLite)(nil)

// sqliteMigrations are applied in order; entry i is schema version i+1. Append, never
// edit: a database records the versions it has applied in schema_migrations.
func sqliteMigrations() []string {
	return []string{
		// 1: the walking skeleton's table.
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

		// 2: soft delete, filters and search. The table is rebuilt because the FTS index
		// needs a stable integer key (seq; a plain rowid may change on VACUUM). search_text
		// is NULL for the rows copied here; OpenSQLite fills it in Go (SearchWords), since
		// SQL cannot compute it. List indexes only cover rows that are not deleted.
		`CREATE TABLE videos_v2 (
			seq              INTEGER PRIMARY KEY,
			id               TEXT    NOT NULL UNIQUE,
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
			update_time_us   INTEGER NOT NULL,
			deleted_at_us    INTEGER,
			search_text      TEXT
		);
		INSERT INTO videos_v2 (id, title, description, owner_id, status, visibility, duration_seconds,
			width, height, renditions, playback_path, thumbnail_path, size_bytes, sha256, failure_reason,
			tags, create_time_us, update_time_us)
		SELECT id, title, description, owner_id, status, visibility, duration_seconds,
			width, height, renditions, playback_path, thumbnail_path, size_bytes, sha256, failure_reason,
			tags, create_time_us, update_time_us
		FROM videos ORDER BY create_time_us, id;
		DROP TABLE videos;
		ALTER TABLE videos_v2 RENAME TO videos;
		CREATE INDEX videos_live_by_create ON videos (create_time_us DESC, id DESC)
			WHERE deleted_at_us IS NULL;
		CREATE INDEX videos_live_by_status ON videos (status, create_time_us DESC, id DESC)
			WHERE deleted_at_us IS NULL;
		CREATE INDEX videos_live_by_owner ON videos (owner_id, create_time_us DESC, id DESC)
			WHERE deleted_at_us IS NULL;
		CREATE INDEX videos_live_by_visibility ON videos (visibility, create_time_us DESC, id DESC)
			WHERE deleted_at_us IS NULL;
		CREATE INDEX videos_unindexed ON videos (seq) WHERE search_text IS NULL;
		CREATE VIRTUAL TABLE videos_fts USING fts5 (
			search_text,
			content = '',
			contentless_delete = 1,
			tokenize = 'ascii',
			prefix = '2 3'
		);
		CREATE TRIGGER videos_fts_insert AFTER INSERT ON videos
		WHEN new.deleted_at_us IS NULL AND new.search_text IS NOT NULL BEGIN
			INSERT INTO videos_fts (rowid, search_text) VALUES (new.seq, new.search_text);
		END;
		CREATE TRIGGER videos_fts_update AFTER UPDATE OF search_text, deleted_at_us ON videos BEGIN
			DELETE FROM videos_fts WHERE rowid = old.seq;
			INSERT INTO videos_fts (rowid, search_text)
				SELECT new.seq, new.search_text
				WHERE new.deleted_at_us IS NULL AND new.search_text IS NOT NULL;
		END;
		CREATE TRIGGER videos_fts_delete AFTER DELETE ON videos BEGIN
			DELETE FROM videos_fts WHERE rowid = old.seq;
		END;`,

		// 3: search folds accents (SearchWords). Every row is indexed again: the trigger
		// drops its old words, and OpenSQLite computes the new ones.
		`UPDATE videos SET search_text = NULL WHERE search_text IS NOT NULL;`,

		// 4: search also folds ligatures, full-width forms and letters such as ł, ø, ß
		// (SearchWords): every row is indexed again, as for 3.
		`UPDATE videos SET search_text = NULL WHERE search_text IS NOT NULL;`,

		// 5: search keeps Indic vowel signs and kana voicing in their words, folds final
		// sigma and drops invisible characters (SearchWords): indexed again, as for 3.
		`UPDATE videos SET search_text = NULL WHERE search_text IS NOT NULL;`,
	}
}

// OpenSQLite opens (creating if needed) the database file at path and brings its schema up
// to date.
func OpenSQLite(ctx context.Context, path string) (*SQLite, error) {
	db, err := sqlitedb.Open(ctx, path, sqliteMigrations())
	if errors.Is(err, sqlitedb.ErrNewerSchema) {
		return nil, fmt.Errorf("%w: %w", ErrSchema, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStore, err)
	}
	s := &SQLite{db: db}
	if err := s.indexUnindexed(ctx); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// indexUnindexed computes search_text for the rows that have none (those migrated from
// schema version 1, and every row once when schema version 3 changed the words), in batches so a large table does not hold the write lock for long.
// The FTS triggers index each row as its search_text is set. Two processes doing this at
// once write the same values.
func (s *SQLite) indexUnindexed(ctx context.Context) error {
	const batch = 500
	for {
		rows, err := s.db.QueryContext(ctx, `SELECT seq, title, description, tags FROM videos
			WHERE search_text IS NULL ORDER BY seq LIMIT ?`, batch)
		if err != nil {
			return fmt.Errorf("%w: find unindexed videos: %w", ErrStore, err)
		}
		type pending struct {
			seq  int64
			text string
		}
		var todo []pending
		for rows.Next() {
			var (
				v    metadatav1.Video
				seq  int64
				tags string
			)
			if err := rows.Scan(&seq, &v.Title, &v.Description, &tags); err != nil {
				rows.Close()
				return fmt.Errorf("%w: find unindexed videos: %w", ErrStore, err)
			}
			if err := json.Unmarshal([]byte(tags), &v.Tags); err != nil {
				rows.Close()
				return fmt.Errorf("%w: decode tags of row %d: %w", ErrStore, seq, err)
			}
			todo = append(todo, pending{seq: seq, text: searchText(&v)})
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("%w: find unindexed videos: %w", ErrStore, err)
		}
		if len(todo) == 0 {
			return nil
		}
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("%w: begin indexing: %w", ErrStore, err)
		}
		for _, p := range todo {
			if _, err := tx.ExecContext(ctx, `UPDATE videos SET search_text = ? WHERE seq = ? AND search_text IS NULL`,
				p.text, p.seq); err != nil {
				_ = tx.Rollback()
				return fmt.Errorf("%w: index row %d: %w", ErrStore, p.seq, err)
			}
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("%w: commit indexing: %w", ErrStore, err)
		}
	}
}

// Close closes the database.
func (s *SQLite) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("%w: close: %w", ErrStore, err)
	}
	return nil
}

const sqliteColumns = `id, title, description, owner_id, status, visibility, duration_seconds, width, height,
	renditions, playback_path, thumbnail_path, size_bytes, sha256, failure_reason, tags,
	create_time_us, update_time_us`

type scanner interface {
	Scan(dest ...any) error
}

func scanSQLite(sc scanner) (*metadatav1.Video, error) {
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
	if err := decodeRenditions(&v, renditions); err != nil {
		return nil, err
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

func encodeTagsJSON(v *metadatav1.Video) (string, error) {
	b, err := json.Marshal(tagsOrEmpty(v))
	if err != nil {
		return "", fmt.Errorf("%w: encode tags of %s: %w", ErrStore, v.GetId(), err)
	}
	return string(b), nil
}

// Create implements Store.
func (s *SQLite) Create(ctx context.Context, v *metadatav1.Video) error {
	renditions, err := encodeRenditions(v)
	if err != nil {
		return err
	}
	tags, err := encodeTagsJSON(v)
	if err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO videos (`+sqliteColumns+`, search_text)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO NOTHING`,
		v.GetId(), v.GetTitle(), v.GetDescription(), v.GetOwnerId(), int32(v.GetStatus()), int32(v.GetVisibility()),
		v.GetDurationSeconds(), v.GetWidth(), v.GetHeight(), renditions, v.GetPlaybackPath(), v.GetThumbnailPath(),
		v.GetSizeBytes(), v.GetSha256(), v.GetFailureReason(), tags,
		v.GetCreateTime().AsTime().UnixMicro(), v.GetUpdateTime().AsTime().UnixMicro(), searchText(v))
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
	return getSQLite(ctx, s.db, id)
}

type queryRower interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func getSQLite(ctx context.Context, q queryRower, id string) (*metadatav1.Video, error) {
	v, err := scanSQLite(q.QueryRowContext(ctx, `SELECT `+sqliteColumns+` FROM videos
		WHERE id = ? AND deleted_at_us IS NULL`, id))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	case err != nil:
		return nil, fmt.Errorf("%w: get %s: %w", ErrStore, id, err)
	}
	return v, nil
}

// ftsMatch is the FTS5 query for words from SearchWords: every word as a prefix. The words
// are letters and digits only, so quoting them is enough to keep FTS5 syntax out.
func ftsMatch(words []string) string {
	parts := make([]string, len(words))
	for i, w := range words {
		parts[i] = `"` + w + `"*`
	}
	return strings.Join(parts, " AND ")
}

// listSQL builds the List query. Every shape has an index: the partial indexes on (filter
// column, create time, id) serve the filters and the order (scanned backwards for oldest
// first), and search goes through the FTS index.
func (s *SQLite) listSQL(q ListQuery) (string, []any, error) {
	if q.Limit <= 0 {
		return "", nil, fmt.Errorf("%w: list limit %d", ErrInvalid, q.Limit)
	}
	where := []string{"deleted_at_us IS NULL"}
	var args []any
	if q.Status != metadatav1.VideoStatus_VIDEO_STATUS_UNSPECIFIED {
		where = append(where, "status = ?")
		args = append(args, int32(q.Status))
	}
	if q.OwnerID != "" {
		where = append(where, "owner_id = ?")
		args = append(args, q.OwnerID)
	}
	if q.Visibility != metadatav1.Visibility_VISIBILITY_UNSPECIFIED {
		where = append(where, "visibility = ?")
		args = append(args, int32(q.Visibility))
	}
	if len(q.Words) > 0 {
		where = append(where, "seq IN (SELECT rowid FROM videos_fts WHERE videos_fts MATCH ?)")
		args = append(args, ftsMatch(q.Words))
	}
	dir, cmp := "DESC", "<"
	if q.Order == OldestFirst {
		dir, cmp = "ASC", ">"
	}
	if q.After != nil {
		where = append(where, "(create_time_us, id) "+cmp+" (?, ?)")
		args = append(args, q.After.CreateTime.UnixMicro(), q.After.ID)
	}
	query := `SELECT ` + sqliteColumns + ` FROM videos WHERE ` + strings.Join(where, " AND ") +
		` ORDER BY create_time_us ` + dir + `, id ` + dir + ` LIMIT ?`
	args = append(args, q.Limit)
	return query, args, nil
}

// List implements Store.
func (s *SQLite) List(ctx context.Context, q ListQuery) ([]*metadatav1.Video, error) {
	query, args, err := s.listSQL(q)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("%w: list: %w", ErrStore, err)
	}
	defer rows.Close()
	return collect(rows, scanSQLite)
}

// explainList returns SQLite's query plan for q, one step per line; the tests use it to
// check that every list shape is served by an index.
func (s *SQLite) explainList(ctx context.Context, q ListQuery) (string, error) {
	query, args, err := s.listSQL(q)
	if err != nil {
		return "", err
	}
	rows, err := s.db.QueryContext(ctx, "EXPLAIN QUERY PLAN "+query, args...)
	if err != nil {
		return "", fmt.Errorf("%w: explain: %w", ErrStore, err)
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var (
			id, parent, notused int
			detail              string
		)
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			return "", fmt.Errorf("%w: explain: %w", ErrStore, err)
		}
		b.WriteString(detail + "\n")
	}
	return b.String(), rows.Err()
}

// Update implements Store.
func (s *SQLite) Update(ctx context.Context, id string, apply func(*metadatav1.Video) (bool, error)) (*metadatav1.Video, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: begin update %s: %w", ErrStore, id, err)
	}
	defer func() { _ = tx.Rollback() }()
	v, err := getSQLite(ctx, tx, id)
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
	renditions, err := encodeRenditions(v)
	if err != nil {
		return nil, err
	}
	tags, err := encodeTagsJSON(v)
	if err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE videos SET
		title = ?, description = ?, owner_id = ?, status = ?, visibility = ?, duration_seconds = ?,
		width = ?, height = ?, renditions = ?, playback_path = ?, thumbnail_path = ?, size_bytes = ?,
		sha256 = ?, failure_reason = ?, tags = ?, update_time_us = ?, search_text = ?
		WHERE id = ? AND deleted_at_us IS NULL`,
		v.GetTitle(), v.GetDescription(), v.GetOwnerId(), int32(v.GetStatus()), int32(v.GetVisibility()),
		v.GetDurationSeconds(), v.GetWidth(), v.GetHeight(), renditions, v.GetPlaybackPath(),
		v.GetThumbnailPath(), v.GetSizeBytes(), v.GetSha256(), v.GetFailureReason(), tags,
		v.GetUpdateTime().AsTime().UnixMicro(), searchText(v), id); err != nil {
		return nil, fmt.Errorf("%w: update %s: %w", ErrStore, id, err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("%w: commit update %s: %w", ErrStore, id, err)
	}
	return v, nil
}

// Delete implements Store. The FTS trigger drops the row from the search index.
func (s *SQLite) Delete(ctx context.Context, id string, at time.Time) error {
	res, err := s.db.ExecContext(ctx, `UPDATE videos SET deleted_at_us = ? WHERE id = ? AND deleted_at_us IS NULL`,
		at.UnixMicro(), id)
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

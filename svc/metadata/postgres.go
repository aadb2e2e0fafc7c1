package metadata

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Postgres is the Store backed by a PostgreSQL database (REELWAY_DATABASE_URL), with
// full-text search on a GIN-indexed tsvector.
type Postgres struct {
	pool *pgxpool.Pool
	desc string
}

var _ Store = (*Postgres)(nil)

// postgresMigrationLock is the pg_advisory_xact_lock key that serializes migrations of the
// metadata schema across processes: the first one migrates, the others wait and then find
// nothing to do. It is an arbitrary constant ("reelmeta" in ASCII).
const postgresMigrationLock int64 = 0x7265656c6d657461

// postgresMigrations are applied in order in one transaction; entry i is schema version
// i+1. Append, never edit: a database records the versions it has applied in
// schema_migrations.
//
// The schema mirrors SQLite's version 2. ids and owner ids use the "C" collation so that
// the (create_time, id) order, and so every page, is the same as SQLite's byte order
// whatever the database's locale. search_text holds SearchWords output, and its words become
// the tsvector's lexemes as they are (array_to_tsvector: no parser, dictionary, stemming or
// stop words), so the index holds exactly the words FTS5 holds, whatever the locale.
func postgresMigrations() []string {
	return []string{
		`CREATE TABLE videos (
			id               TEXT COLLATE "C" PRIMARY KEY,
			title            TEXT             NOT NULL,
			description      TEXT             NOT NULL DEFAULT '',
			owner_id         TEXT COLLATE "C" NOT NULL DEFAULT '',
			status           INTEGER          NOT NULL,
			visibility       INTEGER          NOT NULL,
			duration_seconds DOUBLE PRECISION NOT NULL DEFAULT 0,
			width            INTEGER          NOT NULL DEFAULT 0,
			height           INTEGER          NOT NULL DEFAULT 0,
			renditions       JSONB            NOT NULL DEFAULT '[]',
			playback_path    TEXT             NOT NULL DEFAULT '',
			thumbnail_path   TEXT             NOT NULL DEFAULT '',
			size_bytes       BIGINT           NOT NULL DEFAULT 0,
			sha256           TEXT             NOT NULL DEFAULT '',
			failure_reason   TEXT             NOT NULL DEFAULT '',
			tags             TEXT[]           NOT NULL DEFAULT '{}',
			create_time      TIMESTAMPTZ      NOT NULL,
			update_time      TIMESTAMPTZ      NOT NULL,
			deleted_at       TIMESTAMPTZ,
			search_text      TEXT             NOT NULL DEFAULT '',
			search           TSVECTOR GENERATED ALWAYS AS (array_to_tsvector(string_to_array(search_text, ' '))) STORED
		);
		CREATE INDEX videos_live_by_create ON videos (create_time DESC, id DESC)
			WHERE deleted_at IS NULL;
		CREATE INDEX videos_live_by_status ON videos (status, create_time DESC, id DESC)
			WHERE deleted_at IS NULL;
		CREATE INDEX videos_live_by_owner ON videos (owner_id, create_time DESC, id DESC)
			WHERE deleted_at IS NULL;
		CREATE INDEX videos_live_by_visibility ON videos (visibility, create_time DESC, id DESC)
			WHERE deleted_at IS NULL;
		CREATE INDEX videos_live_search ON videos USING GIN (search)
			WHERE deleted_at IS NULL;`,

		// 2: search folds accents (SearchWords). Every row is indexed again: search_text
		// becomes NULL until OpenPostgres computes the new words.
		`ALTER TABLE videos ALTER COLUMN search_text DROP NOT NULL, ALTER COLUMN search_text DROP DEFAULT;
		UPDATE videos SET search_text = NULL;
		CREATE INDEX IF NOT EXISTS videos_unindexed ON videos (id) WHERE search_text IS NULL;`,

		// 3: search also folds ligatures, full-width forms and letters such as ł, ø, ß
		// (SearchWords): every row is indexed again, as for 2.
		`UPDATE videos SET search_text = NULL;`,

		// 4: search keeps Indic vowel signs and kana voicing in their words, folds final
		// sigma and drops invisible characters (SearchWords): indexed again, as for 2.
		`UPDATE videos SET search_text = NULL;`,
	}
}

// OpenPostgres connects to the database at url (a postgres:// URL or key=value string,
// with pgxpool's pool_* parameters) and brings its schema up to date.
func OpenPostgres(ctx context.Context, url string) (*Postgres, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// The parse error may quote the string, and with it a password.
		return nil, fmt.Errorf("%w: invalid PostgreSQL connection string", ErrStore)
	}
	cc := cfg.ConnConfig
	desc := cc.User + "@" + cc.Host + ":" + strconv.Itoa(int(cc.Port)) + "/" + cc.Database
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: connect %s: %w", ErrStore, desc, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("%w: connect %s: %w", ErrStore, desc, err)
	}
	if err := migratePostgres(ctx, pool, postgresMigrations()); err != nil {
		pool.Close()
		return nil, err
	}
	s := &Postgres{pool: pool, desc: desc}
	if err := s.indexUnindexed(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// Describe names the database without credentials, for logs.
func (s *Postgres) Describe() string { return s.desc }

// migratePostgres applies the steps the database has not recorded, all in one transaction
// (PostgreSQL DDL is transactional, so a failing step leaves the version where it was)
// that first takes an advisory lock, so two processes starting at once never migrate
// concurrently.
func migratePostgres(ctx context.Context, pool *pgxpool.Pool, steps []string) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("%w: begin migration: %w", ErrStore, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, postgresMigrationLock); err != nil {
		return fmt.Errorf("%w: lock migrations: %w", ErrStore, err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER     PRIMARY KEY,
		applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
	)`); err != nil {
		return fmt.Errorf("%w: create schema_migrations: %w", ErrStore, err)
	}
	var current int
	if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("%w: read schema version: %w", ErrStore, err)
	}
	if current > len(steps) {
		return fmt.Errorf("%w: database at version %d, this build knows %d", ErrSchema, current, len(steps))
	}
	for i := current; i < len(steps); i++ {
		// Without arguments pgx uses the simple protocol, which runs a multi-statement step.
		if _, err := tx.Exec(ctx, steps[i]); err != nil {
			return fmt.Errorf("%w: migration %d: %w", ErrStore, i+1, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, i+1); err != nil {
			return fmt.Errorf("%w: record migration %d: %w", ErrStore, i+1, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("%w: commit migrations: %w", ErrStore, err)
	}
	return nil
}

// indexUnindexed computes search_text for the rows that have none (every row once after
// schema version 2 changed the words), in batches so a large table is not locked for
// long. Two processes doing this at once write the same values.
func (s *Postgres) indexUnindexed(ctx context.Context) error {
	const batch = 500
	for {
		rows, err := s.pool.Query(ctx, `SELECT id, title, description, tags FROM videos
			WHERE search_text IS NULL ORDER BY id LIMIT $1`, batch)
		if err != nil {
			return fmt.Errorf("%w: find unindexed videos: %w", ErrStore, err)
		}
		var ids, texts []string
		for rows.Next() {
			var v metadatav1.Video
			if err := rows.Scan(&v.Id, &v.Title, &v.Description, &v.Tags); err != nil {
				rows.Close()
				return fmt.Errorf("%w: find unindexed videos: %w", ErrStore, err)
			}
			ids, texts = append(ids, v.Id), append(texts, searchText(&v))
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("%w: find unindexed videos: %w", ErrStore, err)
		}
		if len(ids) == 0 {
			return nil
		}
		if _, err := s.pool.Exec(ctx, `UPDATE videos SET search_text = u.text
			FROM unnest($1::text[], $2::text[]) AS u(id, text)
			WHERE videos.id = u.id AND videos.search_text IS NULL`, ids, texts); err != nil {
			return fmt.Errorf("%w: index videos: %w", ErrStore, err)
		}
	}
}

// Close closes the pool.
func (s *Postgres) Close() error {
	s.pool.Close()
	return nil
}

const postgresColumns = `id, title, description, owner_id, status, visibility, duration_seconds, width, height,
	renditions, playback_path, thumbnail_path, size_bytes, sha256, failure_reason, tags,
	create_time, update_time`

func scanPostgres(sc scanner) (*metadatav1.Video, error) {
	var (
		v                  metadatav1.Video
		status, visibility int32
		renditions         string
		created, updated   time.Time
	)
	if err := sc.Scan(&v.Id, &v.Title, &v.Description, &v.OwnerId, &status, &visibility, &v.DurationSeconds,
		&v.Width, &v.Height, &renditions, &v.PlaybackPath, &v.ThumbnailPath, &v.SizeBytes, &v.Sha256,
		&v.FailureReason, &v.Tags, &created, &updated); err != nil {
		return nil, err
	}
	v.Status = metadatav1.VideoStatus(status)
	v.Visibility = metadatav1.Visibility(visibility)
	if err := decodeRenditions(&v, renditions); err != nil {
		return nil, err
	}
	if len(v.Tags) == 0 {
		v.Tags = nil
	}
	v.CreateTime = timestamppb.New(created)
	v.UpdateTime = timestamppb.New(updated)
	return &v, nil
}

// Create implements Store.
func (s *Postgres) Create(ctx context.Context, v *metadatav1.Video) error {
	renditions, err := encodeRenditions(v)
	if err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO videos (`+postgresColumns+`, search_text)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
		ON CONFLICT (id) DO NOTHING`,
		v.GetId(), v.GetTitle(), v.GetDescription(), v.GetOwnerId(), int32(v.GetStatus()), int32(v.GetVisibility()),
		v.GetDurationSeconds(), v.GetWidth(), v.GetHeight(), renditions, v.GetPlaybackPath(), v.GetThumbnailPath(),
		v.GetSizeBytes(), v.GetSha256(), v.GetFailureReason(), tagsOrEmpty(v),
		v.GetCreateTime().AsTime(), v.GetUpdateTime().AsTime(), searchText(v))
	if err != nil {
		return fmt.Errorf("%w: insert %s: %w", ErrStore, v.GetId(), err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: %s", ErrExists, v.GetId())
	}
	return nil
}

// Get implements Store.
func (s *Postgres) Get(ctx context.Context, id string) (*metadatav1.Video, error) {
	return getPostgres(ctx, s.pool, id, "")
}

type pgQueryRower interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// getPostgres reads a live video; lock is appended to the query ("FOR UPDATE" or empty).
func getPostgres(ctx context.Context, q pgQueryRower, id, lock string) (*metadatav1.Video, error) {
	v, err := scanPostgres(q.QueryRow(ctx, `SELECT `+postgresColumns+` FROM videos
		WHERE id = $1 AND deleted_at IS NULL `+lock, id))
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	case err != nil:
		return nil, fmt.Errorf("%w: get %s: %w", ErrStore, id, err)
	}
	return v, nil
}

// tsMatch is the tsquery for words from SearchWords: every word as a prefix. It is cast
// with ::tsquery, which takes the quoted words as lexemes without parsing them (as the index
// does); the words are letters and digits only, so quoting keeps tsquery syntax out.
func tsMatch(words []string) string {
	parts := make([]string, len(words))
	for i, w := range words {
		parts[i] = "'" + w + "':*"
	}
	return strings.Join(parts, " & ")
}

// listSQL builds the List query; see SQLite.listSQL for the indexes that serve it. Search
// goes through the GIN index on the tsvector.
func (s *Postgres) listSQL(q ListQuery) (string, []any, error) {
	if q.Limit <= 0 {
		return "", nil, fmt.Errorf("%w: list limit %d", ErrInvalid, q.Limit)
	}
	where := []string{"deleted_at IS NULL"}
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if q.Status != metadatav1.VideoStatus_VIDEO_STATUS_UNSPECIFIED {
		where = append(where, "status = "+arg(int32(q.Status)))
	}
	if q.OwnerID != "" {
		where = append(where, "owner_id = "+arg(q.OwnerID))
	}
	if q.Visibility != metadatav1.Visibility_VISIBILITY_UNSPECIFIED {
		where = append(where, "visibility = "+arg(int32(q.Visibility)))
	}
	if len(q.Words) > 0 {
		where = append(where, "search @@ "+arg(tsMatch(q.Words))+"::tsquery")
	}
	dir, cmp := "DESC", "<"
	if q.Order == OldestFirst {
		dir, cmp = "ASC", ">"
	}
	if q.After != nil {
		where = append(where, "(create_time, id) "+cmp+" ("+arg(q.After.CreateTime)+", "+arg(q.After.ID)+")")
	}
	query := `SELECT ` + postgresColumns + ` FROM videos WHERE ` + strings.Join(where, " AND ") +
		` ORDER BY create_time ` + dir + `, id ` + dir + ` LIMIT ` + arg(q.Limit)
	return query, args, nil
}

// List implements Store.
func (s *Postgres) List(ctx context.Context, q ListQuery) ([]*metadatav1.Video, error) {
	query, args, err := s.listSQL(q)
	if err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("%w: list: %w", ErrStore, err)
	}
	defer rows.Close()
	return collect(rows, scanPostgres)
}

// explainList returns PostgreSQL's plan for q with sequential scans disabled: on the tiny
// tables of tests the planner rightly prefers them, and the question the tests ask is
// whether an index can serve the query at all.
func (s *Postgres) explainList(ctx context.Context, q ListQuery) (string, error) {
	query, args, err := s.listSQL(q)
	if err != nil {
		return "", err
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return "", fmt.Errorf("%w: explain: %w", ErrStore, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, `SET LOCAL enable_seqscan = off`); err != nil {
		return "", fmt.Errorf("%w: explain: %w", ErrStore, err)
	}
	rows, err := tx.Query(ctx, "EXPLAIN "+query, args...)
	if err != nil {
		return "", fmt.Errorf("%w: explain: %w", ErrStore, err)
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return "", fmt.Errorf("%w: explain: %w", ErrStore, err)
		}
		b.WriteString(line + "\n")
	}
	return b.String(), rows.Err()
}

// Update implements Store. The row is locked from the read to the write, so concurrent
// updates of one video apply one after the other.
func (s *Postgres) Update(ctx context.Context, id string, apply func(*metadatav1.Video) (bool, error)) (*metadatav1.Video, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: begin update %s: %w", ErrStore, id, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	v, err := getPostgres(ctx, tx, id, "FOR UPDATE")
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
	if _, err := tx.Exec(ctx, `UPDATE videos SET
		title = $1, description = $2, owner_id = $3, status = $4, visibility = $5, duration_seconds = $6,
		width = $7, height = $8, renditions = $9, playback_path = $10, thumbnail_path = $11, size_bytes = $12,
		sha256 = $13, failure_reason = $14, tags = $15, update_time = $16, search_text = $17
		WHERE id = $18`,
		v.GetTitle(), v.GetDescription(), v.GetOwnerId(), int32(v.GetStatus()), int32(v.GetVisibility()),
		v.GetDurationSeconds(), v.GetWidth(), v.GetHeight(), renditions, v.GetPlaybackPath(),
		v.GetThumbnailPath(), v.GetSizeBytes(), v.GetSha256(), v.GetFailureReason(), tagsOrEmpty(v),
		v.GetUpdateTime().AsTime(), searchText(v), id); err != nil {
		return nil, fmt.Errorf("%w: update %s: %w", ErrStore, id, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("%w: commit update %s: %w", ErrStore, id, err)
	}
	return v, nil
}

// Delete implements Store. The partial indexes stop covering the row at once.
func (s *Postgres) Delete(ctx context.Context, id string, at time.Time) error {
	tag, err := s.pool.Exec(ctx, `UPDATE videos SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL`, id, at)
	if err != nil {
		return fmt.Errorf("%w: delete %s: %w", ErrStore, id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return nil
}

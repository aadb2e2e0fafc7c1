package metadata_test

import (
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"github.com/reelway/reelway/svc/metadata"
	"github.com/reelway/reelway/svc/sqlitedb"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestSearchWords(t *testing.T) {
	long := strings.Repeat("x", 100)
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"  --  ", nil},
		{"Hello, World!", []string{"hello", "world"}},
		{"deep-sea x86_64 3.14 user@example.com", []string{"deep", "sea", "x86", "64", "3", "14", "user", "example", "com"}},
		{"Café ÅNGSTRÖM İstanbul ΣΊΣΥΦΟΣ", []string{"cafe", "angstrom", "istanbul", "σισυφοσ"}},
		{"cafe\u0301 Zu\u0308rich naïve", []string{"cafe", "zurich", "naive"}}, // decomposed marks join their word
		{"Łódź Øresund Straße ﬁnal ＣＡＦＥ Ærø", []string{"lodz", "oresund", "strasse", "final", "cafe", "aero"}},
		{"ΟΔΟΣ οδος προς", []string{"οδοσ", "οδοσ", "προσ"}}, // final sigma folds
		{"हाथी हम थे", []string{"हाथी", "हम", "थे"}},         // vowel signs stay in their word
		{"Kaf\u00adfee ca\u200bfe", []string{"kaffee", "cafe"}},
		{"がっこう かっこう مَرْحَبًا", []string{"がっこう", "かっこう", "مرحبا"}}, // kana keep their voicing, Arabic drops its vowel points // invisible characters vanish
		{"한국어 ภาษาไทย", []string{"한국어", "ภาษาไทย"}},                // Hangul recomposes; Thai keeps its letters
		{"東京の夜 emoji😀test", []string{"東京の夜", "emoji", "test"}},
		{"don't", []string{"don", "t"}},
		{long + " y", []string{long[:64], "y"}},
	}
	for _, tt := range tests {
		if got := metadata.SearchWords(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("SearchWords(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// testListUsesIndexes asks the backend for the plan of every list shape over a table with
// planner statistics: each must be served by an index (the partial list indexes, FTS5 or
// the GIN index), never by a scan of the whole table, and a search for a rare word must go
// through the full-text index. On SQLite the plain list shapes must also read an index in
// order rather than sort.
func testListUsesIndexes(t *testing.T, b backend) {
	ctx := t.Context()
	store := openStore(t, b.newConfig(t))
	base := time.Now().Truncate(time.Microsecond)
	for i := range 1000 {
		title := fmt.Sprintf("clip %d", i)
		if i%200 == 7 {
			title = "rare cat"
		}
		v := &metadatav1.Video{
			Id: fmt.Sprintf("v%04d", i), Title: title, OwnerId: fmt.Sprintf("owner%d", i%20),
			Status: metadatav1.VideoStatus(1 + i%4), Visibility: metadatav1.Visibility(1 + i%3),
			CreateTime: timestamppb.New(base.Add(time.Duration(i) * time.Second)),
		}
		v.UpdateTime = v.CreateTime
		if err := store.Create(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := metadata.Analyze(ctx, store); err != nil {
		t.Fatal(err)
	}
	after := &metadata.Cursor{CreateTime: base.Add(500 * time.Second), ID: "v0500"}
	tests := []struct {
		name   string
		q      metadata.ListQuery
		search bool
	}{
		{"first page", metadata.ListQuery{}, false},
		{"next page", metadata.ListQuery{After: after}, false},
		{"oldest first", metadata.ListQuery{Order: metadata.OldestFirst, After: after}, false},
		{"status", metadata.ListQuery{Status: ready, After: after}, false},
		{"owner", metadata.ListQuery{OwnerID: "owner7", After: after}, false},
		{"visibility", metadata.ListQuery{Visibility: private, After: after}, false},
		{"owner oldest first", metadata.ListQuery{OwnerID: "owner3", Order: metadata.OldestFirst}, false},
		{"all filters", metadata.ListQuery{OwnerID: "owner3", Status: ready, Visibility: private}, false},
		{"search", metadata.ListQuery{Words: []string{"rare"}}, true},
		{"search next page", metadata.ListQuery{Words: []string{"rare", "ca"}, After: after}, true},
		{"search oldest first", metadata.ListQuery{Words: []string{"cat"}, Order: metadata.OldestFirst}, true},
		{"search with filters", metadata.ListQuery{Words: []string{"rare"}, OwnerID: "owner7", Status: ready}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.q.Limit = 51
			plan, err := metadata.ExplainList(ctx, store, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			var bad []string
			switch b.name {
			case "sqlite":
				for line := range strings.Lines(plan) {
					if f := strings.Fields(line); len(f) >= 2 && f[0] == "SCAN" && f[1] == "videos" && !strings.Contains(line, "USING") {
						bad = append(bad, "full table scan")
					}
				}
				if !tt.search && strings.Contains(plan, "TEMP B-TREE") {
					bad = append(bad, "sorts instead of reading the index in order")
				}
				if tt.search && !strings.Contains(plan, "videos_fts VIRTUAL TABLE INDEX") {
					bad = append(bad, "does not use the FTS5 index")
				}
			case "postgres":
				// PostgreSQL rightly sorts a small filtered set rather than walking an
				// index in order, and may serve a filtered search from the filter's
				// index; it must never scan the table, and a search for a rare word
				// alone must use the GIN index.
				if strings.Contains(plan, "Seq Scan") {
					bad = append(bad, "sequential scan")
				}
				if !strings.Contains(plan, "videos_live_") {
					bad = append(bad, "uses none of the list indexes")
				}
				if tt.search && tt.q.OwnerID == "" && !strings.Contains(plan, "videos_live_search") {
					bad = append(bad, "does not use the GIN index")
				}
			}
			if len(bad) > 0 {
				t.Fatalf("%s:\n%s", strings.Join(bad, "; "), plan)
			}
			t.Logf("plan:\n%s", plan)
		})
	}
}

// testMigrations opens one new store from several goroutines at once (each migrates or
// finds the work done, never fails), then checks that a build refuses a database migrated
// by a newer one. On SQLite it also upgrades a database written by the first schema.
func testMigrations(t *testing.T, b backend) {
	ctx := t.Context()
	log := slog.New(slog.DiscardHandler)
	cfg := b.newConfig(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			s, err := metadata.OpenStore(ctx, cfg, log)
			if err != nil {
				t.Errorf("concurrent open: %v", err)
				return
			}
			_ = s.Close()
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	// exec runs a statement on the store's database directly; versions reads
	// schema_migrations.
	var (
		exec     func(query string) error
		versions func() []int
		want     []int
	)
	switch b.name {
	case "sqlite":
		path := filepath.Join(cfg.DataDir, "metadata.db")
		db, err := sql.Open("sqlite", "file:"+path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		exec = func(q string) error { _, err := db.ExecContext(ctx, q); return err }
		versions = func() []int {
			rows, err := db.QueryContext(ctx, `SELECT version FROM schema_migrations ORDER BY version`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var out []int
			for rows.Next() {
				var v int
				if err := rows.Scan(&v); err != nil {
					t.Fatal(err)
				}
				out = append(out, v)
			}
			return out
		}
		want = []int{1, 2, 3, 4, 5}
	case "postgres":
		conn, err := pgx.Connect(ctx, cfg.DatabaseURL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close(ctx) })
		exec = func(q string) error { _, err := conn.Exec(ctx, q); return err }
		versions = func() []int {
			rows, err := conn.Query(ctx, `SELECT version FROM schema_migrations ORDER BY version`)
			if err != nil {
				t.Fatal(err)
			}
			out, err := pgx.CollectRows(rows, pgx.RowTo[int])
			if err != nil {
				t.Fatal(err)
			}
			return out
		}
		want = []int{1, 2, 3, 4}
	}
	if got := versions(); !slices.Equal(got, want) {
		t.Fatalf("schema_migrations after concurrent opens: %v, want %v", got, want)
	}

	// The accent-folding migration (the last one) indexes every row again: a row indexed
	// with the words of before, accents kept, is found without them once it has run.
	s, err := metadata.OpenStore(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	now := timestamppb.Now()
	err = s.Create(ctx, &metadatav1.Video{Id: "refold", Title: "Crème brûlée à Łódź, हाथी", Status: ready, Visibility: public, CreateTime: now, UpdateTime: now})
	_ = s.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := exec(`UPDATE videos SET search_text = 'crème brûlée à łódź'`); err != nil {
		t.Fatal(err)
	}
	if err := exec(fmt.Sprintf(`DELETE FROM schema_migrations WHERE version = %d`, want[len(want)-1])); err != nil {
		t.Fatal(err)
	}
	svc := metadata.New(openStore(t, cfg), log, nil)
	for _, query := range []string{"creme", "brûlée", "BRULEE crème", "lodz", "हाथी"} {
		if got := idsOf(listAll(t, svc, &metadatav1.ListVideosRequest{Query: query}, nil)); !slices.Equal(got, []string{"refold"}) {
			t.Fatalf("query %q after the folding migration: %v, want [refold]", query, got)
		}
	}
	if got := versions(); !slices.Equal(got, want) {
		t.Fatalf("schema_migrations after the folding migration: %v, want %v", got, want)
	}
	if err := exec(`INSERT INTO schema_migrations (version, ` + map[string]string{"sqlite": "applied_at_us", "postgres": "applied_at"}[b.name] + `) VALUES (99, ` + map[string]string{"sqlite": "0", "postgres": "now()"}[b.name] + `)`); err != nil {
		t.Fatal(err)
	}
	if s, err := metadata.OpenStore(ctx, cfg, log); !errors.Is(err, metadata.ErrSchema) {
		if err == nil {
			_ = s.Close()
		}
		t.Fatalf("open of a newer schema: %v, want ErrSchema", err)
	}

	if b.name == "sqlite" {
		testSQLiteUpgradeFromV1(t)
	}
}

// sqliteV1 is schema version 1 as the walking skeleton shipped it.
const sqliteV1 = `CREATE TABLE videos (
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
CREATE INDEX videos_by_status_create ON videos (status, create_time_us DESC, id DESC);`

// testSQLiteUpgradeFromV1 opens a file written by schema version 1: its videos keep every
// field and become searchable.
func testSQLiteUpgradeFromV1(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	db, err := sqlitedb.Open(ctx, filepath.Join(dir, "metadata.db"), []string{sqliteV1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO videos (id, title, description, owner_id, status, visibility,
		duration_seconds, renditions, tags, create_time_us, update_time_us) VALUES
		('old1', 'Vintage Clip', 'from before search', 'alice', 3, 1, 1.5,
		 '[{"name":"360p","width":640,"height":360,"bandwidth":800000}]', '["retro"]', 1000000, 2000000),
		('old2', 'Other', '', '', 1, 1, 0, '[]', '[]', 3000000, 3000000)`); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	store := openStore(t, metadata.Config{DataDir: dir})
	svc := metadata.New(store, slog.New(slog.DiscardHandler), nil)
	got, err := svc.GetVideo(ctx, &metadatav1.GetVideoRequest{Id: "old1"})
	if err != nil {
		t.Fatal(err)
	}
	want := &metadatav1.Video{
		Id: "old1", Title: "Vintage Clip", Description: "from before search", OwnerId: "alice",
		Status: ready, Visibility: public, DurationSeconds: 1.5, Tags: []string{"retro"},
		Renditions: []*metadatav1.Rendition{{Name: "360p", Width: 640, Height: 360, Bandwidth: 800_000}},
		CreateTime: timestamppb.New(time.UnixMicro(1_000_000)), UpdateTime: timestamppb.New(time.UnixMicro(2_000_000)),
	}
	if !proto.Equal(got.GetVideo(), want) {
		t.Fatalf("upgraded video:\n got %v\nwant %v", got.GetVideo(), want)
	}
	for query, ids := range map[string][]string{"vintage": {"old1"}, "retro": {"old1"}, "before": {"old1"}, "other": {"old2"}} {
		if got := idsOf(listAll(t, svc, &metadatav1.ListVideosRequest{Query: query}, nil)); !slices.Equal(got, ids) {
			t.Fatalf("query %q on upgraded file: %v, want %v", query, got, ids)
		}
	}
	if got := idsOf(listAll(t, svc, &metadatav1.ListVideosRequest{OwnerId: "alice"}, nil)); !slices.Equal(got, []string{"old1"}) {
		t.Fatalf("owner filter on upgraded file: %v", got)
	}
}

// parityVocabulary mixes plain words with the cases where tokenizers, case folding and
// collations usually disagree.
func parityVocabulary() []string {
	return []string{
		"hello", "Hello-World", "naïve", "Straße", "STRASSE", "İstanbul", "istanbul", "ǅungla", "1e5", "3.14",
		"v2", "x86_64", "abc123def", "123abc", "東京の夜", "東京", "emoji😀test", "don't", "e-mail",
		"user@example.com", "C++", "ÅNGSTRÖM", "ﬁle", "ΣΊΣΥΦΟΣ", "σίσυφος", "café", "cafe", "Ünïcödé",
		"零一二", "a", "I", "zebra", "zoo", "Zoology", "cat", "category", "catalogue", "running", "run",
		"the", "and", "über", "Ubermensch",
	}
}

// parityVideos is a fixed pseudo-random set of videos with many equal create times and ids
// whose byte order differs from dictionary order ("B" < "_" < "a").
func parityVideos() []*metadatav1.Video {
	r := rand.New(rand.NewPCG(5, 2026))
	vocabulary := parityVocabulary()
	words := func(n int) string {
		var b strings.Builder
		for i := range n {
			if i > 0 {
				b.WriteString([]string{" ", "-", ", ", ". ", "/"}[r.IntN(5)])
			}
			b.WriteString(vocabulary[r.IntN(len(vocabulary))])
		}
		return b.String()
	}
	const idChars = "ABZabz09_-"
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var out []*metadatav1.Video
	for i := range 300 {
		id := string([]byte{idChars[r.IntN(len(idChars))], idChars[r.IntN(len(idChars))]}) + fmt.Sprintf("%03d", i)
		ct := base.Add(time.Duration(r.IntN(40))*time.Second + time.Duration(r.IntN(3))*time.Microsecond)
		v := &metadatav1.Video{
			Id: id, Title: words(1 + r.IntN(4)), Description: words(r.IntN(6)),
			OwnerId:         []string{"", "alice", "bob", "Alice"}[r.IntN(4)],
			Status:          metadatav1.VideoStatus(1 + r.IntN(4)),
			Visibility:      metadatav1.Visibility(1 + r.IntN(3)),
			DurationSeconds: r.Float64() * 1000, Width: int32(r.IntN(4000)), Height: int32(r.IntN(4000)),
			SizeBytes:  r.Int64N(1 << 40),
			CreateTime: timestamppb.New(ct), UpdateTime: timestamppb.New(ct.Add(time.Hour)),
		}
		for range r.IntN(4) {
			v.Tags = append(v.Tags, vocabulary[r.IntN(len(vocabulary))])
		}
		if r.IntN(2) == 0 {
			v.Renditions = []*metadatav1.Rendition{{Name: "720p", Width: 1280, Height: 720, Bandwidth: r.Int64N(1e7), PlaylistPath: "720p/index.m3u8", Codecs: "avc1.64001f,mp4a.40.2"}}
		}
		out = append(out, v)
	}
	return out
}

// videoWords are the words of a video's title, description and tags.
func videoWords(v *metadatav1.Video) []string {
	return metadata.SearchWords(v.GetTitle() + " " + v.GetDescription() + " " + strings.Join(v.GetTags(), " "))
}

// matches is the model of search: every query word starts one of the video's words.
func matches(have []string, query string) bool {
	for _, w := range metadata.SearchWords(query) {
		if !slices.ContainsFunc(have, func(h string) bool { return strings.HasPrefix(h, w) }) {
			return false
		}
	}
	return true
}

// testParity loads the same videos into SQLite and PostgreSQL, deletes the same ones, and
// runs the same requests on both: every page sequence must be identical, and equal to the
// model's answer.
func testParity(t *testing.T, backends []backend) {
	ctx := t.Context()
	log := slog.New(slog.DiscardHandler)
	data := parityVideos()
	deleted := map[string]bool{}
	for i, v := range data {
		if i%11 == 0 {
			deleted[v.GetId()] = true
		}
	}
	words := map[string][]string{}
	for _, v := range data {
		words[v.GetId()] = videoWords(v)
	}
	svcs := make([]*metadata.Service, len(backends))
	for i, b := range backends {
		store := openStore(t, b.newConfig(t))
		for _, v := range data {
			if err := store.Create(ctx, v); err != nil {
				t.Fatalf("%s: %v", b.name, err)
			}
		}
		for id := range deleted {
			if err := store.Delete(ctx, id, time.Now()); err != nil {
				t.Fatalf("%s: %v", b.name, err)
			}
		}
		svcs[i] = metadata.New(store, log, nil)
	}

	// Every stored field survives both backends the same way.
	all := listAll(t, svcs[0], &metadatav1.ListVideosRequest{PageSize: 500}, nil)
	if len(all) != len(data)-len(deleted) {
		t.Fatalf("%s lists %d videos, want %d", backends[0].name, len(all), len(data)-len(deleted))
	}
	for _, want := range data {
		for i, svc := range svcs {
			got, err := svc.GetVideo(ctx, &metadatav1.GetVideoRequest{Id: want.GetId()})
			if deleted[want.GetId()] {
				if err == nil {
					t.Fatalf("%s: deleted %s still readable", backends[i].name, want.GetId())
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s: %v", backends[i].name, err)
			}
			if !proto.Equal(got.GetVideo(), want) {
				t.Fatalf("%s round trip:\n got %v\nwant %v", backends[i].name, got.GetVideo(), want)
			}
		}
	}

	type request struct {
		req  *metadatav1.ListVideosRequest
		keep func(*metadatav1.Video) bool
	}
	filters := []request{
		{&metadatav1.ListVideosRequest{}, func(*metadatav1.Video) bool { return true }},
		{&metadatav1.ListVideosRequest{Status: ready}, func(v *metadatav1.Video) bool { return v.GetStatus() == ready }},
		{&metadatav1.ListVideosRequest{OwnerId: "alice"}, func(v *metadatav1.Video) bool { return v.GetOwnerId() == "alice" }},
		{&metadatav1.ListVideosRequest{OwnerId: "Alice"}, func(v *metadatav1.Video) bool { return v.GetOwnerId() == "Alice" }},
		{&metadatav1.ListVideosRequest{Visibility: private}, func(v *metadatav1.Video) bool { return v.GetVisibility() == private }},
		{&metadatav1.ListVideosRequest{OwnerId: "bob", Status: processing, Visibility: unlisted}, func(v *metadatav1.Video) bool {
			return v.GetOwnerId() == "bob" && v.GetStatus() == processing && v.GetVisibility() == unlisted
		}},
	}
	r := rand.New(rand.NewPCG(7, 2026))
	queries := []string{"cat", "CAT", "catalogue", "東京", "東京の", "strasse", "straße", "istanbul", "İSTANBUL", "σίσυφοσ",
		"ΣΊΣΥΦΟΣ", "1e5", "x86 64", "3 14", "abc123", "123", "ﬁ", "ǆ", "ü", "ünï", "hello world", "e mail", "z", "zoo zebra"}
	vocabulary := parityVocabulary()
	for range 12 {
		w := metadata.SearchWords(vocabulary[r.IntN(len(vocabulary))])
		if len(w) == 0 {
			continue
		}
		word := []rune(w[r.IntN(len(w))])
		queries = append(queries, string(word[:1+r.IntN(len(word))]))
	}
	var requests []request
	for _, f := range filters {
		for _, size := range []int32{20, 500} {
			req := proto.CloneOf(f.req)
			req.PageSize = size
			requests = append(requests, request{req, f.keep})
		}
	}
	for i, q := range queries {
		for _, f := range []request{filters[0], filters[1+i%(len(filters)-1)]} {
			req := proto.CloneOf(f.req)
			req.Query, req.PageSize = q, 9
			requests = append(requests, request{req, func(v *metadatav1.Video) bool { return f.keep(v) && matches(words[v.GetId()], q) }})
		}
	}

	nonEmpty := 0
	for _, rq := range requests {
		var keep []*metadatav1.Video
		for _, v := range data {
			if !deleted[v.GetId()] && rq.keep(v) {
				keep = append(keep, v)
			}
		}
		if len(keep) > 0 {
			nonEmpty++
		}
		for _, order := range []metadatav1.VideoOrder{newestFirst, oldestFirst} {
			req := proto.CloneOf(rq.req)
			req.Order = order
			slices.SortFunc(keep, byOrder(order))
			want := idsOf(keep)
			for i, svc := range svcs {
				if got := idsOf(listAll(t, svc, req, nil)); !slices.Equal(got, want) {
					t.Errorf("%s, %v:\n got %v\nwant %v", backends[i].name, req, got, want)
				}
			}
		}
	}
	if nonEmpty < len(requests)*3/4 {
		t.Errorf("only %d of %d requests found anything: the data set does not exercise search", nonEmpty, len(requests))
	}
	t.Logf("%d requests in both orders, %d with results, identical on %d backends", len(requests), nonEmpty, len(svcs))
}

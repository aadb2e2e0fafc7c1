// Package kernel is the runtime every Reelway process shares: typed configuration, the
// event bus, the registry and catalog, the client pool, and the lifecycle that starts a
// service's listener, registers it, serves, and shuts it down in order.
package kernel

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ErrConfig means the configuration is invalid.
var ErrConfig = errors.New("kernel: config")

// Secret is a string that never prints.
type Secret string

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value {
	if s == "" {
		return slog.StringValue("")
	}
	return slog.StringValue("***")
}

// String implements fmt.Stringer.
func (s Secret) String() string { return s.LogValue().String() }

// Config is one process's configuration, from REELWAY_* environment variables overridden
// by flags.
type Config struct {
	// Service is the service this process runs ("dev" runs all nine).
	Service string
	// Host is the address services listen on and advertise.
	Host string
	// Port is this service's listen port; 0 means the service's default.
	Port int
	// ConsulAddr is the Consul agent's host:port; empty uses the embedded in-process catalog.
	ConsulAddr string
	// NATSURL is the NATS server; empty starts an embedded one (dev only).
	NATSURL string
	// NATSPort is the embedded NATS server's port in dev (-1 none, 0 any free port). Unless
	// set explicitly it is DefaultNATSPort plus PortOffset, so a second platform's NATS
	// does not collide with the first's.
	NATSPort int
	// DataDir holds uploads, HLS output, SQLite databases and JetStream storage. Services
	// that are separate processes share it (one host or a shared volume).
	DataDir string
	// UploadMaxBytes caps one upload.
	UploadMaxBytes int64
	// UploadExpiry is how long a resumable (tus) upload may go without new bytes before
	// it is deleted and its video failed.
	UploadExpiry time.Duration
	// UploadIdleTimeout is how long an upload request body may send nothing before the
	// request fails with 408 (the bytes a tus upload got stay for a resume).
	UploadIdleTimeout time.Duration
	// AuthSecret signs tokens; empty generates one and keeps it in the data directory.
	AuthSecret Secret
	// DatabaseURL, when set, is the PostgreSQL database the metadata service keeps videos
	// in instead of SQLite in DataDir. A Secret because it may carry a password.
	DatabaseURL Secret
	// PlaybackSecret signs private videos' playback tokens (at least 32 bytes); empty
	// generates one into <data>/playback.secret. PlaybackTokenTTL is a token's least
	// lifetime.
	PlaybackSecret   Secret
	PlaybackTokenTTL time.Duration
	// TranscodeLadder lists the HLS rungs ("240p,360p,720p=3000k"; empty: the standard
	// five); TranscodeConcurrency bounds a transcoder's parallel ffmpeg runs;
	// TranscodeTimeout bounds one transcode's work before ffmpeg is killed.
	TranscodeLadder      string
	TranscodeConcurrency int
	TranscodeTimeout     time.Duration
	// ShutdownTimeout bounds the drain of in-flight requests.
	ShutdownTimeout time.Duration
	// DeregisterGrace is how long a stopping service keeps serving after deregistering,
	// so that routers stop sending to it before its listener closes.
	DeregisterGrace time.Duration
	// EventsMaxAge and EventsMaxBytes bound the events stream's retention.
	EventsMaxAge   time.Duration
	EventsMaxBytes int64
	// WorkerConcurrency is how many jobs one worker process runs at once (0: one).
	WorkerConcurrency int
	// WorkerMaxAttempts is how many attempts a job gets before it is dead-lettered;
	// WorkerBackoff the waits after transient failures (the last repeats); WorkerAckWait how
	// long a silent job stays assigned. Zero values take the worker's defaults.
	WorkerMaxAttempts int
	WorkerBackoff     []time.Duration
	WorkerAckWait     time.Duration
	// LogLevel is debug, info, warn or error; LogFormat is text or json.
	LogLevel  string
	LogFormat string
	// GatewayTimeout is the gateway's deadline for unary calls that carry none (negative:
	// none); CORSOrigins the browser origins it allows besides its own ("*": any).
	GatewayTimeout time.Duration
	CORSOrigins    []string
	// PortOffset shifts every default port (dev: run a second platform beside the first).
	PortOffset int
	// Version is the build version, reported in registry meta.
	Version string
	// Ports overrides listen ports by service; 0 picks a free port. Set by tests only.
	Ports map[string]int
}

// DefaultNATSPort is the embedded NATS server's port before PortOffset.
const DefaultNATSPort = 4222

// DefaultPort returns a service's listen port, or 0 for an unknown service.
func DefaultPort(service string) int {
	switch service {
	case "gateway":
		return 9090
	case "upload":
		return 9091
	case "transcoder":
		return 9092
	case "streaming":
		return 9093
	case "metadata":
		return 9005
	case "cache":
		return 9006
	case "auth":
		return 9007
	case "worker":
		return 9008
	case "monitor":
		return 9009
	}
	return 0
}

// Services lists the nine services in start order: dependencies first, gateway last.
func Services() []string {
	return []string{"metadata", "cache", "auth", "transcoder", "streaming", "upload", "worker", "monitor", "gateway"}
}

// PortFor returns the port a service listens on under this config.
func (c Config) PortFor(service string) int {
	if p, ok := c.Ports[service]; ok {
		return p
	}
	if c.Service == service && c.Port != 0 {
		return c.Port
	}
	p := DefaultPort(service)
	if p == 0 {
		return 0
	}
	return p + c.PortOffset
}

// LoadConfig reads the environment through getenv, then the flags in args.
func LoadConfig(service string, args []string, getenv func(string) string) (Config, error) {
	c := Config{
		Service:           service,
		Host:              envOr(getenv, "REELWAY_HOST", "127.0.0.1"),
		ConsulAddr:        getenv("REELWAY_CONSUL_ADDR"),
		NATSURL:           getenv("REELWAY_NATS_URL"),
		DataDir:           envOr(getenv, "REELWAY_DATA_DIR", "data"),
		AuthSecret:        Secret(getenv("REELWAY_AUTH_SECRET")),
		DatabaseURL:       Secret(getenv("REELWAY_DATABASE_URL")),
		PlaybackSecret:    Secret(getenv("REELWAY_PLAYBACK_SECRET")),
		TranscodeLadder:   getenv("REELWAY_TRANSCODE_LADDER"),
		LogLevel:          envOr(getenv, "REELWAY_LOG_LEVEL", "info"),
		LogFormat:         envOr(getenv, "REELWAY_LOG_FORMAT", "text"),
		Version:           envOr(getenv, "REELWAY_VERSION", "dev"),
		UploadMaxBytes:    4 << 30,
		UploadExpiry:      24 * time.Hour,
		UploadIdleTimeout: time.Minute,
		ShutdownTimeout:   15 * time.Second,
		DeregisterGrace:   time.Second,
		GatewayTimeout:    30 * time.Second,
		EventsMaxAge:      7 * 24 * time.Hour,
		EventsMaxBytes:    1 << 30,
		NATSPort:          DefaultNATSPort,
	}
	var errs []error
	intEnv := func(name string, dst *int) {
		if v := getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
			*dst = n
		}
	}
	int64Env := func(name string, dst *int64) {
		if v := getenv(name); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
			*dst = n
		}
	}
	durEnv := func(name string, dst *time.Duration) {
		if v := getenv(name); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
			*dst = d
		}
	}
	intEnv("REELWAY_PORT", &c.Port)
	intEnv("REELWAY_PORT_OFFSET", &c.PortOffset)
	intEnv("REELWAY_NATS_PORT", &c.NATSPort)
	int64Env("REELWAY_UPLOAD_MAX_BYTES", &c.UploadMaxBytes)
	durEnv("REELWAY_UPLOAD_EXPIRY", &c.UploadExpiry)
	durEnv("REELWAY_UPLOAD_IDLE_TIMEOUT", &c.UploadIdleTimeout)
	int64Env("REELWAY_EVENTS_MAX_BYTES", &c.EventsMaxBytes)
	durEnv("REELWAY_SHUTDOWN_TIMEOUT", &c.ShutdownTimeout)
	durEnv("REELWAY_DEREGISTER_GRACE", &c.DeregisterGrace)
	durEnv("REELWAY_EVENTS_MAX_AGE", &c.EventsMaxAge)
	durEnv("REELWAY_PLAYBACK_TOKEN_TTL", &c.PlaybackTokenTTL)
	intEnv("REELWAY_TRANSCODE_CONCURRENCY", &c.TranscodeConcurrency)
	durEnv("REELWAY_TRANSCODE_TIMEOUT", &c.TranscodeTimeout)
	durEnv("REELWAY_GATEWAY_TIMEOUT", &c.GatewayTimeout)
	for _, o := range strings.Split(getenv("REELWAY_CORS_ORIGINS"), ",") {
		if o = strings.TrimSpace(o); o != "" {
			c.CORSOrigins = append(c.CORSOrigins, o)
		}
	}
	intEnv("REELWAY_WORKER_CONCURRENCY", &c.WorkerConcurrency)
	intEnv("REELWAY_WORKER_MAX_ATTEMPTS", &c.WorkerMaxAttempts)
	durEnv("REELWAY_WORKER_ACK_WAIT", &c.WorkerAckWait)
	if v := getenv("REELWAY_WORKER_BACKOFF"); v != "" {
		for _, part := range strings.Split(v, ",") {
			d, err := time.ParseDuration(strings.TrimSpace(part))
			if err != nil || d <= 0 {
				errs = append(errs, fmt.Errorf("REELWAY_WORKER_BACKOFF: %q is not a positive duration", part))
				continue
			}
			c.WorkerBackoff = append(c.WorkerBackoff, d)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("%w: %w", ErrConfig, err)
	}

	fs := flag.NewFlagSet(service, flag.ContinueOnError)
	fs.StringVar(&c.Host, "host", c.Host, "address to listen on and advertise (REELWAY_HOST)")
	fs.IntVar(&c.Port, "port", c.Port, "listen port; 0 = the service's default (REELWAY_PORT)")
	fs.IntVar(&c.PortOffset, "port-offset", c.PortOffset, "added to every default port (REELWAY_PORT_OFFSET)")
	fs.StringVar(&c.ConsulAddr, "consul", c.ConsulAddr, "Consul agent host:port; empty = embedded catalog (REELWAY_CONSUL_ADDR)")
	fs.StringVar(&c.NATSURL, "nats", c.NATSURL, "NATS URL; empty = embedded server in dev (REELWAY_NATS_URL)")
	fs.IntVar(&c.NATSPort, "nats-port", c.NATSPort, "port of the embedded NATS server (dev, nats); default 4222 + port offset (REELWAY_NATS_PORT)")
	fs.StringVar(&c.DataDir, "data", c.DataDir, "data directory (REELWAY_DATA_DIR)")
	fs.IntVar(&c.WorkerConcurrency, "worker-concurrency", c.WorkerConcurrency, "jobs one worker process runs at once; 0 = 1 (REELWAY_WORKER_CONCURRENCY)")
	fs.Int64Var(&c.UploadMaxBytes, "upload-max-bytes", c.UploadMaxBytes, "largest accepted upload (REELWAY_UPLOAD_MAX_BYTES)")
	fs.DurationVar(&c.UploadIdleTimeout, "upload-idle-timeout", c.UploadIdleTimeout, "how long an upload body may send nothing before it fails with 408 (REELWAY_UPLOAD_IDLE_TIMEOUT)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "drain time on shutdown (REELWAY_SHUTDOWN_TIMEOUT)")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error (REELWAY_LOG_LEVEL)")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "text or json (REELWAY_LOG_FORMAT)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err // the flag package printed the usage; not a mistake
		}
		return c, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	natsPortSet := getenv("REELWAY_NATS_PORT") != ""
	fs.Visit(func(f *flag.Flag) { natsPortSet = natsPortSet || f.Name == "nats-port" })
	if !natsPortSet {
		c.NATSPort = DefaultNATSPort + c.PortOffset
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return c, fmt.Errorf("%w: log level %q: want debug, info, warn or error", ErrConfig, c.LogLevel)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return c, fmt.Errorf("%w: log format %q: want text or json", ErrConfig, c.LogFormat)
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("%w: unexpected arguments %q", ErrConfig, fs.Args())
	}
	if c.UploadMaxBytes <= 0 {
		return c, fmt.Errorf("%w: upload max bytes must be positive", ErrConfig)
	}
	if c.UploadExpiry <= 0 {
		return c, fmt.Errorf("%w: REELWAY_UPLOAD_EXPIRY must be positive", ErrConfig)
	}
	if c.UploadIdleTimeout <= 0 {
		return c, fmt.Errorf("%w: upload idle timeout must be positive", ErrConfig)
	}
	if c.WorkerConcurrency < 0 || c.WorkerMaxAttempts < 0 || c.WorkerAckWait < 0 {
		return c, fmt.Errorf("%w: worker concurrency, max attempts and ack wait must not be negative", ErrConfig)
	}
	abs, err := filepath.Abs(c.DataDir)
	if err != nil {
		return c, fmt.Errorf("%w: data dir: %w", ErrConfig, err)
	}
	c.DataDir = abs
	c.fillDefaults()
	return c, nil
}

// Defaults the services would otherwise apply themselves to a zero value. They are set
// here so that the configuration logged at startup is the one in effect.
const (
	defaultPlaybackTokenTTL  = time.Hour
	defaultTranscodeTimeout  = 2 * time.Hour
	defaultWorkerMaxAttempts = 5
	defaultWorkerAckWait     = 30 * time.Second
)

// fillDefaults replaces zero values that mean "the default" with the default itself.
func (c *Config) fillDefaults() {
	if c.Port == 0 && c.Service != "dev" {
		c.Port = c.PortFor(c.Service)
	}
	if c.PlaybackTokenTTL <= 0 {
		c.PlaybackTokenTTL = defaultPlaybackTokenTTL
	}
	if c.TranscodeConcurrency <= 0 {
		c.TranscodeConcurrency = 1
	}
	if c.TranscodeTimeout <= 0 {
		c.TranscodeTimeout = defaultTranscodeTimeout
	}
	if c.WorkerConcurrency == 0 {
		c.WorkerConcurrency = 1
	}
	if c.WorkerMaxAttempts == 0 {
		c.WorkerMaxAttempts = defaultWorkerMaxAttempts
	}
	if c.WorkerAckWait == 0 {
		c.WorkerAckWait = defaultWorkerAckWait
	}
	if len(c.WorkerBackoff) == 0 {
		c.WorkerBackoff = []time.Duration{time.Second, 10 * time.Second, time.Minute}
	}
}

func envOr(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}

// LogValue implements slog.LogValuer: the config logged once at startup, secrets masked.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("service", c.Service),
		slog.String("host", c.Host),
		slog.Int("port", c.Port),
		slog.Int("port_offset", c.PortOffset),
		slog.String("consul", orDefault(c.ConsulAddr, "embedded")),
		slog.String("nats", orDefault(c.NATSURL, "embedded")),
		slog.Int("nats_port", c.NATSPort),
		slog.String("data_dir", c.DataDir),
		slog.String("log_level", c.LogLevel),
		slog.Int64("upload_max_bytes", c.UploadMaxBytes),
		slog.Duration("upload_expiry", c.UploadExpiry),
		slog.Duration("upload_idle_timeout", c.UploadIdleTimeout),
		slog.Any("auth_secret", c.AuthSecret),
		slog.Any("database_url", c.DatabaseURL),
		slog.Duration("shutdown_timeout", c.ShutdownTimeout),
		slog.Duration("deregister_grace", c.DeregisterGrace),
		slog.Duration("gateway_timeout", c.GatewayTimeout),
		slog.String("cors_origins", strings.Join(c.CORSOrigins, ",")),
		slog.Duration("events_max_age", c.EventsMaxAge),
		slog.Int64("events_max_bytes", c.EventsMaxBytes),
		slog.Int("worker_concurrency", c.WorkerConcurrency),
		slog.Int("worker_max_attempts", c.WorkerMaxAttempts),
		slog.Duration("worker_ack_wait", c.WorkerAckWait),
		slog.Any("worker_backoff", c.WorkerBackoff),
		slog.Any("playback_secret", c.PlaybackSecret),
		slog.Duration("playback_token_ttl", c.PlaybackTokenTTL),
		slog.String("transcode_ladder", orDefault(c.TranscodeLadder, "standard")),
		slog.Int("transcode_concurrency", c.TranscodeConcurrency),
		slog.Duration("transcode_timeout", c.TranscodeTimeout),
		slog.String("version", c.Version),
	)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// NewLogger builds the process logger from the config.
func NewLogger(c Config) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(strings.ToUpper(c.LogLevel))); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, opts)
	if c.LogFormat == "json" {
		h = slog.NewJSONHandler(os.Stderr, opts)
	}
	return slog.New(rpcLogHandler(h))
}

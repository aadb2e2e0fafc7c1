package kernel_test

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/reelway/reelway/svc/kernel"
)

func TestLoadConfig(t *testing.T) {
	tests := []struct {
		name    string
		service string
		env     map[string]string
		args    []string
		check   func(t *testing.T, c kernel.Config)
		wantErr bool
	}{
		{
			name: "defaults", service: "metadata",
			check: func(t *testing.T, c kernel.Config) {
				if c.Host != "127.0.0.1" || c.PortFor("metadata") != 9005 || c.PortFor("gateway") != 9090 {
					t.Errorf("host %s ports %d %d", c.Host, c.PortFor("metadata"), c.PortFor("gateway"))
				}
				if c.ShutdownTimeout != 15*time.Second || c.UploadMaxBytes != 4<<30 {
					t.Errorf("timeouts/limits %v %d", c.ShutdownTimeout, c.UploadMaxBytes)
				}
				if !strings.HasSuffix(c.DataDir, "/data") {
					t.Errorf("data dir %q not absolute default", c.DataDir)
				}
			},
		},
		{
			name: "env", service: "upload",
			env: map[string]string{"REELWAY_PORT": "19091", "REELWAY_UPLOAD_MAX_BYTES": "1000", "REELWAY_CONSUL_ADDR": "c:8500", "REELWAY_SHUTDOWN_TIMEOUT": "3s"},
			check: func(t *testing.T, c kernel.Config) {
				if c.PortFor("upload") != 19091 || c.UploadMaxBytes != 1000 || c.ConsulAddr != "c:8500" || c.ShutdownTimeout != 3*time.Second {
					t.Errorf("got %+v", c)
				}
				if c.PortFor("metadata") != 9005 {
					t.Errorf("REELWAY_PORT leaked to another service: %d", c.PortFor("metadata"))
				}
			},
		},
		{
			name: "flags override env", service: "upload",
			env:  map[string]string{"REELWAY_PORT": "19091"},
			args: []string{"-port", "29091", "-port-offset", "100"},
			check: func(t *testing.T, c kernel.Config) {
				if c.PortFor("upload") != 29091 || c.PortFor("metadata") != 9105 {
					t.Errorf("ports %d %d", c.PortFor("upload"), c.PortFor("metadata"))
				}
			},
		},
		{
			name: "gateway", service: "gateway",
			env: map[string]string{"REELWAY_GATEWAY_TIMEOUT": "5s", "REELWAY_CORS_ORIGINS": " https://a.example, ,https://b.example"},
			check: func(t *testing.T, c kernel.Config) {
				if c.GatewayTimeout != 5*time.Second || strings.Join(c.CORSOrigins, "|") != "https://a.example|https://b.example" {
					t.Errorf("gateway timeout %v, origins %q", c.GatewayTimeout, c.CORSOrigins)
				}
			},
		},
		{name: "nats port default", service: "dev", check: natsPort(4222)},
		{name: "nats port follows env offset", service: "dev", env: map[string]string{"REELWAY_PORT_OFFSET": "600"}, check: natsPort(4822)},
		{name: "nats port follows flag offset", service: "nats", args: []string{"-port-offset", "100"}, check: natsPort(4322)},
		{name: "nats port env wins over offset", service: "dev", env: map[string]string{"REELWAY_PORT_OFFSET": "600", "REELWAY_NATS_PORT": "5000"}, check: natsPort(5000)},
		{name: "nats port env 0 is any free port", service: "dev", env: map[string]string{"REELWAY_PORT_OFFSET": "600", "REELWAY_NATS_PORT": "0"}, check: natsPort(0)},
		{name: "nats port flag wins over offset", service: "dev", env: map[string]string{"REELWAY_PORT_OFFSET": "600"}, args: []string{"-nats-port", "4222"}, check: natsPort(4222)},
		{name: "nats port flag wins over env", service: "dev", env: map[string]string{"REELWAY_NATS_PORT": "5000"}, args: []string{"-port-offset", "7", "-nats-port", "5001"}, check: natsPort(5001)},
		{name: "bad nats port", service: "dev", env: map[string]string{"REELWAY_NATS_PORT": "x"}, wantErr: true},
		{name: "bad gateway timeout", service: "gateway", env: map[string]string{"REELWAY_GATEWAY_TIMEOUT": "soon"}, wantErr: true},
		{name: "bad int env", service: "cache", env: map[string]string{"REELWAY_PORT": "abc"}, wantErr: true},
		{name: "bad duration", service: "cache", env: map[string]string{"REELWAY_SHUTDOWN_TIMEOUT": "soon"}, wantErr: true},
		{name: "unknown flag", service: "cache", args: []string{"-nope"}, wantErr: true},
		{name: "stray argument", service: "cache", args: []string{"extra"}, wantErr: true},
		{name: "zero upload limit", service: "upload", args: []string{"-upload-max-bytes", "0"}, wantErr: true},
		{name: "upload idle timeout default", service: "upload", check: uploadIdle(time.Minute)},
		{name: "upload idle timeout env", service: "upload", env: map[string]string{"REELWAY_UPLOAD_IDLE_TIMEOUT": "90s"}, check: uploadIdle(90 * time.Second)},
		{name: "upload idle timeout flag wins", service: "upload", env: map[string]string{"REELWAY_UPLOAD_IDLE_TIMEOUT": "90s"}, args: []string{"-upload-idle-timeout", "5s"}, check: uploadIdle(5 * time.Second)},
		{name: "zero upload idle timeout", service: "upload", env: map[string]string{"REELWAY_UPLOAD_IDLE_TIMEOUT": "0s"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := kernel.LoadConfig(tt.service, tt.args, func(k string) string { return tt.env[k] })
			if tt.wantErr {
				if !errors.Is(err, kernel.ErrConfig) {
					t.Fatalf("want ErrConfig, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

// natsPort checks the embedded NATS server's port.
func natsPort(want int) func(t *testing.T, c kernel.Config) {
	return func(t *testing.T, c kernel.Config) {
		t.Helper()
		if c.NATSPort != want {
			t.Errorf("nats port %d, want %d", c.NATSPort, want)
		}
	}
}

func TestConfigLogMasksSecrets(t *testing.T) {
	c, err := kernel.LoadConfig("auth", nil, func(k string) string {
		if k == "REELWAY_AUTH_SECRET" {
			return "hunter2-very-secret"
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("startup", "config", c)
	if strings.Contains(buf.String(), "hunter2") {
		t.Fatalf("secret leaked: %s", buf.String())
	}
	if !strings.Contains(buf.String(), `"auth_secret":"***"`) {
		t.Fatalf("secret not shown masked: %s", buf.String())
	}
}

// The startup line must show the values in effect, not the zero values that mean "the
// default" to the services.
func TestConfigLogShowsEffectiveDefaults(t *testing.T) {
	cases := []struct {
		service string
		env     map[string]string
		want    []string
	}{
		{service: "upload", want: []string{`"port":9091`, `"playback_token_ttl":3600000000000`, `"transcode_concurrency":1`,
			`"transcode_timeout":7200000000000`, `"worker_concurrency":1`, `"transcode_ladder":"standard"`, `"gateway_timeout":30000000000`}},
		{service: "streaming", env: map[string]string{"REELWAY_PORT_OFFSET": "100"}, want: []string{`"port":9193`}},
		{service: "worker", env: map[string]string{"REELWAY_WORKER_CONCURRENCY": "4", "REELWAY_TRANSCODE_LADDER": "240p"},
			want: []string{`"worker_concurrency":4`, `"transcode_ladder":"240p"`, `"worker_max_attempts":5`}},
	}
	for _, tc := range cases {
		c, err := kernel.LoadConfig(tc.service, nil, func(k string) string { return tc.env[k] })
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("startup", "config", c)
		for _, w := range tc.want {
			if !strings.Contains(buf.String(), w) {
				t.Errorf("%s: %s missing from %s", tc.service, w, buf.String())
			}
		}
	}
}

func uploadIdle(want time.Duration) func(*testing.T, kernel.Config) {
	return func(t *testing.T, c kernel.Config) {
		t.Helper()
		if c.UploadIdleTimeout != want {
			t.Errorf("upload idle timeout %v, want %v", c.UploadIdleTimeout, want)
		}
	}
}

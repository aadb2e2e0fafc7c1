package kernel_test

import (
	"slices"
	"testing"
	"time"

	"github.com/reelway/reelway/svc/kernel"
)

func TestWorkerConfig(t *testing.T) {
	cases := []struct {
		name    string
		env     map[string]string
		args    []string
		want    kernel.Config
		wantErr bool
	}{
		// The defaults are filled in so the startup log shows the values in effect; they
		// are the worker package's own defaults.
		{name: "defaults are the worker's", want: kernel.Config{WorkerConcurrency: 1, WorkerMaxAttempts: 5,
			WorkerAckWait: 30 * time.Second, WorkerBackoff: []time.Duration{time.Second, 10 * time.Second, time.Minute}}},
		{
			name: "env",
			env: map[string]string{
				"REELWAY_WORKER_CONCURRENCY": "3", "REELWAY_WORKER_MAX_ATTEMPTS": "7",
				"REELWAY_WORKER_BACKOFF": "1s, 10s,1m", "REELWAY_WORKER_ACK_WAIT": "45s",
			},
			want: kernel.Config{WorkerConcurrency: 3, WorkerMaxAttempts: 7, WorkerAckWait: 45 * time.Second,
				WorkerBackoff: []time.Duration{time.Second, 10 * time.Second, time.Minute}},
		},
		{name: "flag overrides env", env: map[string]string{"REELWAY_WORKER_CONCURRENCY": "3"}, args: []string{"-worker-concurrency", "2"},
			want: kernel.Config{WorkerConcurrency: 2, WorkerMaxAttempts: 5, WorkerAckWait: 30 * time.Second,
				WorkerBackoff: []time.Duration{time.Second, 10 * time.Second, time.Minute}}},
		{name: "bad backoff", env: map[string]string{"REELWAY_WORKER_BACKOFF": "1s,soon"}, wantErr: true},
		{name: "zero backoff", env: map[string]string{"REELWAY_WORKER_BACKOFF": "0s"}, wantErr: true},
		{name: "negative concurrency", env: map[string]string{"REELWAY_WORKER_CONCURRENCY": "-1"}, wantErr: true},
		{name: "negative ack wait", env: map[string]string{"REELWAY_WORKER_ACK_WAIT": "-1s"}, wantErr: true},
	}
	for _, tc := range cases {
		c, err := kernel.LoadConfig("worker", tc.args, func(k string) string { return tc.env[k] })
		if tc.wantErr {
			if err == nil {
				t.Errorf("%s: no error", tc.name)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if c.WorkerConcurrency != tc.want.WorkerConcurrency || c.WorkerMaxAttempts != tc.want.WorkerMaxAttempts ||
			c.WorkerAckWait != tc.want.WorkerAckWait || !slices.Equal(c.WorkerBackoff, tc.want.WorkerBackoff) {
			t.Errorf("%s: got concurrency %d attempts %d ack wait %v backoff %v", tc.name,
				c.WorkerConcurrency, c.WorkerMaxAttempts, c.WorkerAckWait, c.WorkerBackoff)
		}
	}
}

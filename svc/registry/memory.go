package registry

import (
	"context"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Memory is the embedded, in-process Registry used when no Consul address is configured.
// It probes each instance's health URL like a Consul agent would.
type Memory struct {
	log    *slog.Logger
	client *http.Client

	mu        sync.Mutex
	instances map[string]*memEntry
	changed   chan struct{}
}

type memEntry struct {
	inst   Instance
	cancel context.CancelFunc
}

var _ Registry = (*Memory)(nil)

// NewMemory returns an empty in-process registry.
func NewMemory(log *slog.Logger) *Memory {
	return &Memory{
		log:       log,
		client:    &http.Client{Timeout: 2 * time.Second},
		instances: make(map[string]*memEntry),
		changed:   make(chan struct{}),
	}
}

// Register adds the instance, critical until its first passing probe.
func (m *Memory) Register(_ context.Context, reg Registration) error {
	interval := reg.CheckInterval
	if interval <= 0 {
		interval = time.Second
	}
	inst := reg.Instance
	inst.Tags = slices.Clone(inst.Tags)
	inst.Meta = maps.Clone(inst.Meta)
	inst.Health = HealthCritical
	ctx, cancel := context.WithCancel(context.Background())
	m.mu.Lock()
	if old, ok := m.instances[inst.ID]; ok {
		old.cancel()
	}
	m.instances[inst.ID] = &memEntry{inst: inst, cancel: cancel}
	m.notifyLocked()
	m.mu.Unlock()
	go m.probe(ctx, inst.ID, reg.HealthURL, interval)
	return nil
}

func (m *Memory) probe(ctx context.Context, id, url string, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		h := HealthCritical
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err == nil {
			resp, err := m.client.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode/100 == 2 {
					h = HealthPassing
				}
			}
		}
		if ctx.Err() != nil {
			return
		}
		m.mu.Lock()
		if e, ok := m.instances[id]; ok && e.inst.Health != h {
			e.inst.Health = h
			m.notifyLocked()
		}
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Deregister removes the instance.
func (m *Memory) Deregister(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.instances[id]; ok {
		e.cancel()
		delete(m.instances, id)
		m.notifyLocked()
	}
	return nil
}

func (m *Memory) notifyLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// Watch reports the instances now, on every change, and every 10 s unchanged (a sync,
// like a Consul blocking query that timed out).
func (m *Memory) Watch(ctx context.Context, fn func([]Instance)) error {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		m.mu.Lock()
		all := make([]Instance, 0, len(m.instances))
		for _, e := range m.instances {
			all = append(all, e.inst)
		}
		ch := m.changed
		m.mu.Unlock()
		fn(all)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		case <-t.C:
		}
	}
}

// Close stops every health probe.
func (m *Memory) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range m.instances {
		e.cancel()
	}
}

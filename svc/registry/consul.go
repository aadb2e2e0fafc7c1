package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// ErrConsul wraps failures talking to the Consul agent.
var ErrConsul = errors.New("registry: consul")

// ConsulConfig tunes how a Consul registry watches and keeps its registrations.
type ConsulConfig struct {
	// WaitTime bounds one blocking query. Each answer, changed or not, counts as a sync,
	// so the catalog's age stays below it while the agent answers.
	WaitTime time.Duration
	// MinGap is the least time between two queries of a watch or a keeper: however the
	// agent answers, neither loop can spin.
	MinGap time.Duration
	// RetryMin and RetryMax bound the jittered exponential backoff after errors, and
	// after blocking-query indexes that go backwards or come back as zero.
	RetryMin time.Duration
	RetryMax time.Duration
	// Grace keeps, after the index goes backwards (a restarted agent that lost its
	// catalog), the instances the new catalog lacks, while their processes register again.
	Grace time.Duration
}

// DefaultConsulConfig is the production tuning.
func DefaultConsulConfig() ConsulConfig {
	return ConsulConfig{
		WaitTime: 10 * time.Second,
		MinGap:   50 * time.Millisecond,
		RetryMin: 250 * time.Millisecond,
		RetryMax: 5 * time.Second,
		Grace:    15 * time.Second,
	}
}

// Consul is a Registry backed by a Consul agent.
type Consul struct {
	client *api.Client
	log    *slog.Logger
	cfg    ConsulConfig
	health *http.Client

	mu      sync.Mutex
	keepers map[string]*keeper
}

type keeper struct {
	cancel context.CancelFunc
	done   chan struct{}
}

var _ Registry = (*Consul)(nil)

// NewConsul returns a registry talking to the Consul agent at addr (host:port).
func NewConsul(addr string, log *slog.Logger) (*Consul, error) {
	return NewConsulWith(addr, log, DefaultConsulConfig())
}

// NewConsulWith is NewConsul with explicit tuning; zero fields take the defaults.
func NewConsulWith(addr string, log *slog.Logger, cfg ConsulConfig) (*Consul, error) {
	def := DefaultConsulConfig()
	if cfg.WaitTime <= 0 {
		cfg.WaitTime = def.WaitTime
	}
	if cfg.MinGap <= 0 {
		cfg.MinGap = def.MinGap
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = def.RetryMin
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(def.RetryMax, cfg.RetryMin)
	}
	if cfg.Grace <= 0 {
		cfg.Grace = def.Grace
	}
	acfg := api.DefaultConfig()
	acfg.Address = addr
	client, err := api.NewClient(acfg)
	if err != nil {
		return nil, fmt.Errorf("%w: new client: %w", ErrConsul, err)
	}
	return &Consul{
		client:  client,
		log:     log,
		cfg:     cfg,
		health:  &http.Client{Timeout: 2 * time.Second},
		keepers: make(map[string]*keeper),
	}, nil
}

// Register registers the instance with an HTTP check against its health URL, and keeps
// it registered until ctx ends or Deregister: an agent that forgets the instance (a
// restarted dev agent has an empty catalog, and Consul's anti-entropy only repairs what
// the agent itself remembers) gets it registered again.
func (c *Consul) Register(ctx context.Context, reg Registration) error {
	if err := c.register(ctx, reg, api.HealthCritical); err != nil {
		return err
	}
	kctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	k := &keeper{cancel: cancel, done: make(chan struct{})}
	c.mu.Lock()
	if old, ok := c.keepers[reg.ID]; ok {
		old.cancel()
		<-old.done
	}
	c.keepers[reg.ID] = k
	c.mu.Unlock()
	go func() {
		defer close(k.done)
		stop := context.AfterFunc(ctx, cancel)
		defer stop()
		c.keep(kctx, reg)
	}()
	return nil
}

// register sends the registration. A new instance starts critical and receives traffic
// only after its first passing check; an instance registered again by its keeper starts
// with the status its own health endpoint reports, since it was serving a moment ago.
func (c *Consul) register(ctx context.Context, reg Registration, status string) error {
	interval := reg.CheckInterval
	if interval <= 0 {
		interval = time.Second
	}
	deregAfter := reg.DeregisterAfter
	if deregAfter < time.Minute {
		deregAfter = time.Minute // Consul's floor.
	}
	svc := &api.AgentServiceRegistration{
		ID:      reg.ID,
		Name:    reg.Name,
		Address: reg.Address,
		Port:    reg.Port,
		Tags:    reg.Tags,
		Meta:    reg.Meta,
		Check: &api.AgentServiceCheck{
			CheckID:                        "check-" + reg.ID,
			Name:                           reg.Name + " health",
			HTTP:                           reg.HealthURL,
			Method:                         "GET",
			Interval:                       interval.String(),
			Timeout:                        interval.String(),
			DeregisterCriticalServiceAfter: deregAfter.String(),
			Status:                         status,
			// Two misses before critical and one pass before passing: a single slow probe
			// does not flap routes, a dead process still leaves within a few seconds.
			FailuresBeforeCritical: 2,
			SuccessBeforePassing:   1,
		},
	}
	opts := &api.ServiceRegisterOpts{ReplaceExistingChecks: true}
	if err := c.client.Agent().ServiceRegisterOpts(svc, opts.WithContext(ctx)); err != nil {
		return fmt.Errorf("%w: register %s: %w", ErrConsul, reg.ID, err)
	}
	return nil
}

// keep follows the agent's record of the instance with hash-based blocking queries and
// registers it again when the agent answers that it does not know it.
func (c *Consul) keep(ctx context.Context, reg Registration) {
	var hash string
	backoff := c.cfg.RetryMin
	for {
		start := time.Now()
		q := (&api.QueryOptions{WaitHash: hash, WaitTime: c.cfg.WaitTime}).WithContext(ctx)
		_, meta, err := c.client.Agent().Service(reg.ID, q)
		if ctx.Err() != nil {
			return
		}
		var se api.StatusError
		if errors.As(err, &se) && se.Code == http.StatusNotFound {
			hash = ""
			err = c.register(ctx, reg, c.selfStatus(ctx, reg.HealthURL))
			if err == nil {
				c.log.WarnContext(ctx, "registry.reregistered", "id", reg.ID)
				backoff = c.cfg.RetryMin
				continue
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.log.DebugContext(ctx, "registry.keep", "id", reg.ID, "err", err)
			if !sleepCtx(ctx, jitter(backoff)) {
				return
			}
			backoff = min(backoff*2, c.cfg.RetryMax)
			continue
		}
		backoff = c.cfg.RetryMin
		hash = meta.LastContentHash
		if !sleepCtx(ctx, c.cfg.MinGap-time.Since(start)) {
			return
		}
	}
}

// selfStatus probes the instance's own health URL, as the agent's check will.
func (c *Consul) selfStatus(ctx context.Context, url string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return api.HealthCritical
	}
	resp, err := c.health.Do(req)
	if err != nil {
		return api.HealthCritical
	}
	resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		return api.HealthPassing
	}
	return api.HealthCritical
}

// Deregister stops keeping the instance registered, then removes it.
func (c *Consul) Deregister(ctx context.Context, id string) error {
	c.mu.Lock()
	k, ok := c.keepers[id]
	delete(c.keepers, id)
	c.mu.Unlock()
	if ok {
		k.cancel()
		<-k.done
	}
	q := (&api.QueryOptions{}).WithContext(ctx)
	if err := c.client.Agent().ServiceDeregisterOpts(id, q); err != nil {
		return fmt.Errorf("%w: deregister %s: %w", ErrConsul, id, err)
	}
	return nil
}

// Watch follows the catalog with blocking queries on the health index: it wakes when a
// check or registration changes, and when a query's wait time ends (a sync that found
// nothing new), never on a timer of its own. While the agent is unreachable the last
// catalog stays in force and the watch retries with jittered backoff. An index that goes
// backwards or comes back as zero resets the watch (a full refetch), with growing pauses
// when it keeps happening, so a misbehaving agent cannot make it spin.
func (c *Consul) Watch(ctx context.Context, fn func([]Instance)) error {
	var (
		index      uint64
		known      uint64 // the last index seen, kept across errors to spot an agent restart
		last       []Instance
		have       bool
		lastSync   = time.Now()
		backoff    = c.cfg.RetryMin
		resets     int
		graceUntil time.Time
		graceKeep  []Instance
	)
	report := func() {
		view := last
		if time.Now().Before(graceUntil) {
			view = withMissing(last, graceKeep)
		}
		fn(view)
		lastSync = time.Now()
	}
	for {
		start := time.Now()
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: c.cfg.WaitTime}).WithContext(ctx)
		_, meta, err := c.client.Health().State(api.HealthAny, q)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		reset := false
		if err == nil {
			next := meta.LastIndex
			// Consul's advice for blocking queries: an index that goes backwards (a
			// restarted agent, a restored snapshot) or is zero resets the watch.
			reset = next == 0 || next < index || next < known
			if reset {
				resets++
				c.log.WarnContext(ctx, "registry.watch.reset", "index", max(index, known), "got", next, "resets", resets)
				if next < known && have {
					// A restarted agent lost its catalog: keep what it forgot while the
					// instances register again.
					graceKeep = last
					graceUntil = time.Now().Add(c.cfg.Grace)
				}
			}
			if !reset && next == index && have {
				report() // the wait ended with nothing new: still a sync
			} else {
				var all []Instance
				if all, err = c.snapshot(ctx); err == nil {
					index, known = next, next
					last, have = all, true
					report()
				}
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// The agent may come back restarted, with an index far below ours that a
			// blocking query would wait out: ask without blocking first.
			index = 0
			wait := jitter(backoff)
			c.log.WarnContext(ctx, "registry.watch", "err", err, "retry_in", wait,
				"catalog_age", time.Since(lastSync).Round(time.Millisecond))
			if !sleepCtx(ctx, wait) {
				return ctx.Err()
			}
			backoff = min(backoff*2, c.cfg.RetryMax)
			continue
		}
		backoff = c.cfg.RetryMin
		pause := c.cfg.MinGap - time.Since(start)
		if reset {
			// A reset refetches at once; repeated resets (an agent answering zero) back off.
			pause = max(pause, min(c.cfg.RetryMin<<min(resets-1, 10), c.cfg.RetryMax))
		} else {
			resets = 0
		}
		if !sleepCtx(ctx, pause) {
			return ctx.Err()
		}
	}
}

// withMissing returns fresh plus the instances of old that fresh lacks.
func withMissing(fresh, old []Instance) []Instance {
	out := slices.Clone(fresh)
	for _, o := range old {
		if !slices.ContainsFunc(fresh, func(f Instance) bool { return f.ID == o.ID }) {
			out = append(out, o)
		}
	}
	return out
}

// jitter returns a duration in [d/2, d].
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// sleepCtx waits d (nothing when d <= 0) unless ctx ends first; it reports whether ctx
// is still alive.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (c *Consul) snapshot(ctx context.Context) ([]Instance, error) {
	q := (&api.QueryOptions{}).WithContext(ctx)
	names, _, err := c.client.Catalog().Services(q)
	if err != nil {
		return nil, fmt.Errorf("%w: list services: %w", ErrConsul, err)
	}
	var all []Instance
	for name := range names {
		if name == "consul" {
			continue
		}
		entries, _, err := c.client.Health().Service(name, "", false, q)
		if err != nil {
			return nil, fmt.Errorf("%w: health of %s: %w", ErrConsul, name, err)
		}
		for _, e := range entries {
			addr := e.Service.Address
			if addr == "" {
				addr = e.Node.Address
			}
			all = append(all, Instance{
				ID:      e.Service.ID,
				Name:    e.Service.Service,
				Address: addr,
				Port:    e.Service.Port,
				Tags:    e.Service.Tags,
				Meta:    e.Service.Meta,
				Health:  Health(e.Checks.AggregatedStatus()),
			})
		}
	}
	return all, nil
}

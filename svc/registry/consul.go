package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/hashicorp/consul/api"
)

// ErrConsul wraps failures talking to the Consul agent.
var ErrConsul = errors.New("registry: consul")

// Consul is a Registry backed by a Consul agent.
type Consul struct {
	client *api.Client
	log    *slog.Logger
}

var _ Registry = (*Consul)(nil)

// NewConsul returns a registry talking to the Consul agent at addr (host:port).
func NewConsul(addr string, log *slog.Logger) (*Consul, error) {
	cfg := api.DefaultConfig()
	cfg.Address = addr
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: new client: %w", ErrConsul, err)
	}
	return &Consul{client: client, log: log}, nil
}

// Register registers the instance with an HTTP check against its health URL.
func (c *Consul) Register(ctx context.Context, reg Registration) error {
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

// Deregister removes the instance.
func (c *Consul) Deregister(ctx context.Context, id string) error {
	q := (&api.QueryOptions{}).WithContext(ctx)
	if err := c.client.Agent().ServiceDeregisterOpts(id, q); err != nil {
		return fmt.Errorf("%w: deregister %s: %w", ErrConsul, id, err)
	}
	return nil
}

// Watch follows the catalog with blocking queries on the health index: it wakes only when a
// check or registration changes, never on a timer.
func (c *Consul) Watch(ctx context.Context, fn func([]Instance)) error {
	var index uint64
	backoff := 250 * time.Millisecond
	for {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Minute}).WithContext(ctx)
		_, meta, err := c.client.Health().State(api.HealthAny, q)
		if err == nil {
			var all []Instance
			all, err = c.snapshot(ctx)
			if err == nil {
				fn(all)
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			c.log.Warn("registry.watch", "err", err, "retry_in", backoff)
			wait := backoff/2 + rand.N(backoff/2+1)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
			backoff = min(backoff*2, 10*time.Second)
			continue
		}
		backoff = 250 * time.Millisecond
		// An index that goes backwards (agent restart, snapshot restore) or is zero must
		// reset the watch, or the next query would return at once forever.
		if meta.LastIndex < index || meta.LastIndex == 0 {
			index = 0
			continue
		}
		index = meta.LastIndex
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

package events

import "github.com/prometheus/client_golang/prometheus"

// Collectors returns Prometheus series of the bus's connection, for whichever registry
// the process serves: reelway_nats_connected (1 or 0), reelway_nats_reconnects_total,
// reelway_nats_published_total and reelway_nats_publish_errors_total. The last error is in
// Status (and /healthz), not in a series.
func Collectors(b *Bus) []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "reelway_nats_connected",
			Help: "1 while the process's NATS connection is up, 0 while it is reconnecting or closed.",
		}, func() float64 {
			if b.Connected() {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "reelway_nats_reconnects_total",
			Help: "Times the NATS connection was re-established.",
		}, func() float64 { return float64(b.reconnects.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "reelway_nats_published_total",
			Help: "Events acknowledged by JetStream.",
		}, func() float64 { return float64(b.published.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "reelway_nats_publish_errors_total",
			Help: "Publishes refused or not acknowledged (the outbox retries its own).",
		}, func() float64 { return float64(b.publishErrors.Load()) }),
	}
}

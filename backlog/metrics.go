package backlog

import "github.com/prometheus/client_golang/prometheus"

var (
	mSent     = prometheus.NewDesc("mqmesh_backlog_notices_sent_total", "Backlog notices this node published, by tier (local, idc, global).", []string{"tier"}, nil)
	mAccepted = prometheus.NewDesc("mqmesh_backlog_notices_received_total", "Backlog notices a view accepted, by tier.", []string{"tier"}, nil)
	mDropped  = prometheus.NewDesc("mqmesh_backlog_notices_dropped_total", "Backlog notices a view dropped over its rate limit, by tier.", []string{"tier"}, nil)
	mEntries  = prometheus.NewDesc("mqmesh_backlog_view_entries", "(node, queue) backlogs a view holds.", nil, nil)
)

// PublisherCollector reports the notices a publisher sent; pub may return
// nil (not started yet).
func PublisherCollector(pub func() *Publisher) prometheus.Collector { return pubCollector(pub) }

type pubCollector func() *Publisher

func (c pubCollector) Describe(ch chan<- *prometheus.Desc) { ch <- mSent }
func (c pubCollector) Collect(ch chan<- prometheus.Metric) {
	p := c()
	if p == nil {
		return
	}
	for _, t := range Tiers {
		ch <- prometheus.MustNewConstMetric(mSent, prometheus.CounterValue, float64(p.Sent(t)), t.String())
	}
}

// Collector reports what the view received.
func (v *View) Collector() prometheus.Collector { return viewCollector{v} }

type viewCollector struct{ v *View }

func (c viewCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- mAccepted
	ch <- mDropped
	ch <- mEntries
}

func (c viewCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.v.Stats()
	for _, t := range Tiers {
		ch <- prometheus.MustNewConstMetric(mAccepted, prometheus.CounterValue, float64(s.Accepted[t]), t.String())
		ch <- prometheus.MustNewConstMetric(mDropped, prometheus.CounterValue, float64(s.Dropped[t]), t.String())
	}
	ch <- prometheus.MustNewConstMetric(mEntries, prometheus.GaugeValue, float64(len(c.v.Entries())))
}

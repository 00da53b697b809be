package main

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/mesh"
	"github.com/mqmesh/mqmesh/worker"
)

// Every metric the Grafana dashboard in configs/ queries is one a node or a
// worker exports.
func TestGrafanaDashboardUsesRealMetrics(t *testing.T) {
	n, _ := startNode(t)
	nc, err := n.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	pool, err := worker.New(nc, worker.Config{ID: "p", IDC: "local", Node: "n1", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	m, err := mesh.New(mesh.Config{Meta: mesh.Meta{Role: mesh.RoleNode, IDC: "local", Name: "n1"}})
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	fq := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	for _, c := range []prometheus.Collector{n.Collector(), pool.Collector(), m.Collector(), backlog.PublisherCollector(func() *backlog.Publisher { return nil })} {
		ch := make(chan *prometheus.Desc, 256)
		c.Describe(ch)
		close(ch)
		for d := range ch {
			if s := fq.FindStringSubmatch(d.String()); s != nil {
				have[s[1]] = true
			}
		}
	}
	b, err := os.ReadFile("../../configs/grafana/mqmesh-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	used := 0
	for _, name := range regexp.MustCompile(`mqmesh_[a-z_]+`).FindAllString(string(b), -1) {
		base := strings.TrimSuffix(name, "_bucket")
		if name == "mqmesh_dashboard" { // the file's own uid/tag
			continue
		}
		used++
		if !have[base] && !slices.Contains(missing, name) {
			missing = append(missing, name)
		}
	}
	if used < 30 || len(missing) > 0 {
		t.Fatalf("dashboard queries %d metric uses; not exported: %v", used, missing)
	}
}

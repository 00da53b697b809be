package mapreduce_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/mqmesh/mqmesh/worker/mapreduce"
)

func TestPoolsConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  mapreduce.PoolsConfig
		want string // substring of the error; "" for none
	}{
		{cfg: mapreduce.PoolsConfig{"rpc": 4, "push": 8}},
		{cfg: nil, want: "no pool"},
		{cfg: mapreduce.PoolsConfig{"rpc": 4, "push": 0}, want: "pools.push: size 0"},
		{cfg: mapreduce.PoolsConfig{"rpc": -2}, want: "pools.rpc: size -2"},
		{cfg: mapreduce.PoolsConfig{"": 1}, want: "empty pool name"},
	} {
		err := tc.cfg.Validate()
		if tc.want == "" {
			if err != nil {
				t.Errorf("%v: %v", tc.cfg, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err %v, want %q", tc.cfg, err, tc.want)
		}
		if _, err := mapreduce.NewPools(tc.cfg); err == nil {
			t.Errorf("%v: NewPools accepted it", tc.cfg)
		}
	}
}

func TestPoolsGetAndStats(t *testing.T) {
	ps, err := mapreduce.NewPools(mapreduce.PoolsConfig{"rpc": 4, "db": 2})
	if err != nil {
		t.Fatal(err)
	}
	p, err := ps.Get("rpc")
	if err != nil || p.Name() != "rpc" || p.Size() != 4 {
		t.Fatalf("Get(rpc) = %v, %v", p, err)
	}
	if _, err := ps.Get("nope"); !errors.Is(err, mapreduce.ErrUnknownPool) {
		t.Fatalf("Get(nope): %v", err)
	}
	st := ps.Stats()
	if len(st) != 2 || st[0].Name != "db" || st[1].Name != "rpc" || st[1].Size != 4 {
		t.Fatalf("stats %+v", st)
	}
	if _, err := mapreduce.NewPool("x", 0); err == nil {
		t.Fatal("NewPool accepted size 0")
	}
}

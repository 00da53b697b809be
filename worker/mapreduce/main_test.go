package mapreduce_test

import (
	"testing"

	"github.com/mqmesh/mqmesh/internal/testlog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testlog.LeakOptions()...)
}

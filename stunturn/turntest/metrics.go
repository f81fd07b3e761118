package turntest

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric is the value of the counters and gauges called name in reg whose label has value
// (summed); label "" sums every series of name.
func Metric(t testing.TB, reg prometheus.Gatherer, name, label, value string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			match := label == ""
			for _, l := range m.GetLabel() {
				match = match || (l.GetName() == label && l.GetValue() == value)
			}
			if match {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// WaitMetric polls Metric until it is at least want or 10 seconds passed, and returns it.
func WaitMetric(t testing.TB, reg prometheus.Gatherer, name, label, value string, want float64) float64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := Metric(t, reg, name, label, value)
		if got >= want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
}

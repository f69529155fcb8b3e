package harness

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
)

// Scrape returns the member's /metrics text from its client URL.
func Scrape(t testing.TB, n *Node) string {
	t.Helper()
	text, err := scrape(n)
	if err != nil {
		t.Fatal(err)
	}
	return text
}

func scrape(n *Node) (string, error) {
	resp, err := http.Get(n.ClientURL + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// MetricValue is the value of a series in a /metrics text; name is a
// regular expression, so a labelled series is written escaped:
// `x_total\{outcome="ok"\}`.
func MetricValue(t testing.TB, text, name string) float64 {
	t.Helper()
	v, err := parseMetric(text, name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// ReadMetric scrapes the member and returns an unlabelled series' value,
// for goroutines other than the test's (which must not call t.Fatal).
func ReadMetric(n *Node, name string) (float64, error) {
	text, err := scrape(n)
	if err != nil {
		return 0, err
	}
	return parseMetric(text, name)
}

func parseMetric(text, name string) (float64, error) {
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		return 0, fmt.Errorf("/metrics has no series %s", name)
	}
	return strconv.ParseFloat(m[1], 64)
}

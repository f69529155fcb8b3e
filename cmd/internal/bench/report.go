package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is the outcome of one run of one workload. In JSON mode it is
// printed as a single object on one line; these field names are what
// test/bench and docs/benchmarks.md read.
type Result struct {
	Workload string `json:"workload"`
	// Ops counts successful operations: requests for put, range and
	// txn-put, complete lists for list, delivered events for watch.
	Ops int64 `json:"ops"`
	// Duration of the measured phase, in seconds.
	Duration  float64 `json:"duration"`
	OpsPerSec float64 `json:"ops_per_sec"`
	// Latency says what the percentiles measure: "request", "page"
	// (one page of a paged list) or "put-to-event".
	Latency string  `json:"latency"`
	P50Ms   float64 `json:"p50_ms"`
	P90Ms   float64 `json:"p90_ms"`
	P99Ms   float64 `json:"p99_ms"`
	MaxMs   float64 `json:"max_ms"`
	MeanMs  float64 `json:"mean_ms"`
	// Errors counts failed operations (and, for watch, missing events).
	Errors int64 `json:"errors"`
	// Extra holds workload-specific numbers, e.g. pages and whole-list
	// latency for list, put throughput for watch.
	Extra map[string]float64 `json:"extra,omitempty"`
	// Params echoes the settings that shaped the run.
	Params map[string]string `json:"params,omitempty"`
}

// ms converts a duration to float milliseconds, rounded to microseconds.
func ms(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}

// round3 keeps three decimals so JSON stays readable.
func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

// fillLatency copies the percentiles of h into r.
func (r *Result) fillLatency(h *Histogram) {
	r.P50Ms = ms(h.Quantile(0.50))
	r.P90Ms = ms(h.Quantile(0.90))
	r.P99Ms = ms(h.Quantile(0.99))
	r.MaxMs = ms(h.Max())
	r.MeanMs = ms(h.Mean())
}

// setRate fills Duration and OpsPerSec from the elapsed time.
func (r *Result) setRate(elapsed time.Duration) {
	r.Duration = round3(elapsed.Seconds())
	if elapsed > 0 {
		r.OpsPerSec = round3(float64(r.Ops) / elapsed.Seconds())
	}
}

func (r *Result) extra(k string, v float64) {
	if r.Extra == nil {
		r.Extra = map[string]float64{}
	}
	r.Extra[k] = round3(v)
}

// writeResult prints r as a table or as one JSON object.
func writeResult(w io.Writer, r *Result, format string) error {
	if format == "json" {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	return writeTable(w, r)
}

func writeTable(w io.Writer, r *Result) error {
	var b strings.Builder
	if len(r.Params) > 0 {
		keys := make([]string, 0, len(r.Params))
		for k := range r.Params {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + "=" + r.Params[k]
		}
		fmt.Fprintf(&b, "%s: %s\n\n", r.Workload, strings.Join(parts, " "))
	}
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "workload\tops\terrors\tseconds\tops/s\tlatency\tp50 ms\tp90 ms\tp99 ms\tmax ms\t\n")
	fmt.Fprintf(tw, "%s\t%d\t%d\t%.3f\t%.1f\t%s\t%.3f\t%.3f\t%.3f\t%.3f\t\n",
		r.Workload, r.Ops, r.Errors, r.Duration, r.OpsPerSec, r.Latency, r.P50Ms, r.P90Ms, r.P99Ms, r.MaxMs)
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Extra) > 0 {
		keys := make([]string, 0, len(r.Extra))
		for k := range r.Extra {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b.WriteString("\n")
		tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		for _, k := range keys {
			fmt.Fprintf(tw, "  %s\t%s\n", k, formatFloat(r.Extra[k]))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func formatFloat(f float64) string {
	if f == math.Trunc(f) && math.Abs(f) < 1e15 {
		return fmt.Sprintf("%d", int64(f))
	}
	return fmt.Sprintf("%.3f", f)
}

package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestBucketsContiguous(t *testing.T) {
	// Every value maps into the bucket whose bounds contain it, and
	// consecutive buckets tile the number line without gaps.
	prevEnd := int64(0)
	for i := range numBuckets - 1 {
		low, width := bucketBounds(i)
		if low != prevEnd {
			t.Fatalf("bucket %d starts at %d, previous ended at %d", i, low, prevEnd)
		}
		if width <= 0 {
			t.Fatalf("bucket %d has width %d", i, width)
		}
		if i >= 2*subBuckets && float64(width)/float64(low) > 1.0/subBuckets+1e-12 {
			t.Fatalf("bucket %d: width %d too wide for low %d", i, width, low)
		}
		for _, v := range []int64{low, low + width/2, low + width - 1} {
			if got := bucketOf(v); got != i {
				t.Fatalf("bucketOf(%d) = %d, want %d", v, got, i)
			}
		}
		prevEnd = low + width
	}
	if got := bucketOf(math.MaxInt64); got != numBuckets-1 {
		t.Fatalf("bucketOf(max) = %d, want last bucket %d", got, numBuckets-1)
	}
}

func TestQuantileAgainstSortedSamples(t *testing.T) {
	tests := []struct {
		name string
		gen  func(r *rand.Rand) time.Duration
	}{
		{"uniform-1ms", func(r *rand.Rand) time.Duration { return time.Duration(r.Int64N(int64(time.Millisecond))) }},
		{"exponential", func(r *rand.Rand) time.Duration { return time.Duration(r.ExpFloat64() * float64(2*time.Millisecond)) }},
		{"bimodal", func(r *rand.Rand) time.Duration {
			if r.IntN(100) < 95 {
				return 300*time.Microsecond + time.Duration(r.IntN(100000))
			}
			return 40*time.Millisecond + time.Duration(r.IntN(10000000))
		}},
		{"tiny", func(r *rand.Rand) time.Duration { return time.Duration(r.IntN(200)) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			h := NewHistogram()
			samples := make([]time.Duration, 100000)
			for i := range samples {
				samples[i] = tt.gen(r)
				h.Record(samples[i])
			}
			slices.Sort(samples)
			for _, q := range []float64{0, 0.5, 0.9, 0.99, 0.999, 1} {
				rank := max(1, int(math.Ceil(q*float64(len(samples)))))
				want := samples[rank-1]
				got := h.Quantile(q)
				// Midpoint of a bucket no wider than 1/128 of its
				// lower bound; exact below 256ns.
				tol := float64(want)/subBuckets + 1
				if math.Abs(float64(got-want)) > tol {
					t.Errorf("q=%v: got %v, want %v (±%.0fns)", q, got, want, tol)
				}
			}
			if h.Min() != samples[0] || h.Max() != samples[len(samples)-1] {
				t.Errorf("min/max = %v/%v, want %v/%v", h.Min(), h.Max(), samples[0], samples[len(samples)-1])
			}
			if h.Count() != uint64(len(samples)) {
				t.Errorf("count = %d", h.Count())
			}
		})
	}
}

func TestEmptyAndEdgeValues(t *testing.T) {
	h := NewHistogram()
	if h.Quantile(0.5) != 0 || h.Min() != 0 || h.Max() != 0 || h.Mean() != 0 {
		t.Fatal("empty histogram should report zeros")
	}
	h.Record(-5) // clock went backwards: counted as zero
	h.Record(100 * time.Hour)
	if h.Min() != 0 || h.Max() != 100*time.Hour {
		t.Fatalf("min/max = %v/%v", h.Min(), h.Max())
	}
	if got := h.Quantile(1); got != 100*time.Hour {
		t.Fatalf("p100 = %v, want the exact max", got)
	}
	if got := h.Quantile(0.5); got != 0 {
		t.Fatalf("p50 = %v, want 0", got)
	}
}

func TestConcurrentRecordAndMerge(t *testing.T) {
	h := NewHistogram()
	var wg sync.WaitGroup
	const workers, each = 8, 10000
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				h.Record(time.Duration(w*each+i+1) * time.Microsecond)
			}
		})
	}
	wg.Wait()
	if h.Count() != workers*each {
		t.Fatalf("count = %d", h.Count())
	}
	if h.Min() != time.Microsecond || h.Max() != workers*each*time.Microsecond {
		t.Fatalf("min/max = %v/%v", h.Min(), h.Max())
	}
	wantMean := time.Duration((workers*each + 1) * int(time.Microsecond) / 2)
	if h.Mean() != wantMean {
		t.Fatalf("mean = %v, want %v", h.Mean(), wantMean)
	}

	m := NewHistogram()
	m.Record(time.Nanosecond)
	m.Merge(h)
	m.Merge(NewHistogram())
	if m.Count() != workers*each+1 || m.Min() != time.Nanosecond || m.Max() != h.Max() {
		t.Fatalf("merged count/min/max = %d/%v/%v", m.Count(), m.Min(), m.Max())
	}
	if got, want := m.Quantile(0.5), h.Quantile(0.5); got != want {
		t.Fatalf("merged p50 = %v, want %v", got, want)
	}
}

func BenchmarkRecord(b *testing.B) {
	h := NewHistogram()
	b.ReportAllocs()
	d := 1234567 * time.Nanosecond
	for b.Loop() {
		h.Record(d)
	}
}

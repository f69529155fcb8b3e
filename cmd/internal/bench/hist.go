package bench

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram buckets: values below 2*subBuckets nanoseconds are counted
// exactly; above that, every power of two is split into subBuckets equal
// buckets, so a bucket is never wider than 1/subBuckets of its lower bound
// (< 0.8% relative error with 128). Values of maxBits bits or more (about 78
// hours in nanoseconds) land in the last bucket; the exact maximum is kept
// separately. The counters take a fixed 43 KiB whatever the number of
// samples, so millions of operations cost no more memory than ten.
const (
	subBucketBits = 7
	subBuckets    = 1 << subBucketBits
	maxBits       = 48
	numBuckets    = (maxBits - subBucketBits + 1) * subBuckets
)

// Histogram records durations in log-linear buckets, in the manner of
// HdrHistogram. Record is safe for concurrent use by many goroutines and
// never allocates; the read methods are meant for after recording stops
// (they are safe during recording but see a moving picture).
type Histogram struct {
	counts [numBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64 // nanoseconds; 584 years before it wraps
	min    atomic.Int64  // valid when n > 0
	max    atomic.Int64
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	h := &Histogram{}
	h.min.Store(math.MaxInt64)
	return h
}

// bucketOf maps a non-negative value to its bucket index.
func bucketOf(v int64) int {
	u := uint64(v)
	shift := bits.Len64(u) - subBucketBits - 1
	if shift < 0 {
		shift = 0
	}
	if shift > maxBits-subBucketBits-1 {
		return numBuckets - 1
	}
	return shift*subBuckets + int(u>>uint(shift))
}

// bucketBounds returns the smallest value of bucket i and its width.
func bucketBounds(i int) (low, width int64) {
	if i < 2*subBuckets {
		return int64(i), 1
	}
	shift := i/subBuckets - 1
	mant := int64(i - shift*subBuckets)
	return mant << uint(shift), 1 << uint(shift)
}

// Record adds one sample. Negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0
	}
	h.counts[bucketOf(v)].Add(1)
	h.n.Add(1)
	h.sum.Add(uint64(v))
	h.lowerMin(v)
	h.raiseMax(v)
}

func (h *Histogram) lowerMin(v int64) {
	for {
		cur := h.min.Load()
		if v >= cur || h.min.CompareAndSwap(cur, v) {
			return
		}
	}
}

func (h *Histogram) raiseMax(v int64) {
	for {
		cur := h.max.Load()
		if v <= cur || h.max.CompareAndSwap(cur, v) {
			return
		}
	}
}

// Merge adds every sample of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.Count() == 0 {
		return
	}
	for i := range o.counts {
		if c := o.counts[i].Load(); c != 0 {
			h.counts[i].Add(c)
		}
	}
	h.n.Add(o.n.Load())
	h.sum.Add(o.sum.Load())
	h.lowerMin(o.min.Load())
	h.raiseMax(o.max.Load())
}

// Count returns the number of samples.
func (h *Histogram) Count() uint64 { return h.n.Load() }

// Min returns the smallest sample, exactly, or 0 when empty.
func (h *Histogram) Min() time.Duration {
	if h.Count() == 0 {
		return 0
	}
	return time.Duration(h.min.Load())
}

// Max returns the largest sample, exactly, or 0 when empty.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max.Load()) }

// Mean returns the exact mean, or 0 when empty.
func (h *Histogram) Mean() time.Duration {
	n := h.Count()
	if n == 0 {
		return 0
	}
	return time.Duration(h.sum.Load() / n)
}

// Quantile returns the value below which a fraction q (0..1) of the samples
// fall: the midpoint of the bucket holding the sample of rank ceil(q*n),
// clamped to the exact minimum and maximum; q=1 gives the exact maximum.
// Empty histograms give 0.
func (h *Histogram) Quantile(q float64) time.Duration {
	n := h.Count()
	if n == 0 {
		return 0
	}
	q = max(0, min(1, q))
	rank := uint64(math.Ceil(q * float64(n)))
	rank = max(rank, 1)
	if rank == n {
		return h.Max()
	}
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			if i == numBuckets-1 { // unbounded: values beyond maxBits
				return h.Max()
			}
			low, width := bucketBounds(i)
			v := low + (width-1)/2
			v = max(v, h.min.Load())
			v = min(v, h.max.Load())
			return time.Duration(v)
		}
	}
	return h.Max()
}

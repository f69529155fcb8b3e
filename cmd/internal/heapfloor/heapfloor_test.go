package heapfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		name               string
		live, roots, floor uint64
		want               int
	}{
		{"no collection yet", 0, 0, 32 * mib, 100},
		{"live heap above the floor", 40 * mib, mib, 32 * mib, 100},
		{"base goal reaches the floor", 16 * mib, 0, 32 * mib, 100},
		{"small heap grows to the floor", 4 * mib, 0, 32 * mib, 700},
		{"roots count in the goal", 3 * mib, mib, 32 * mib, 725},
		{"tiny heap: the scaled minimum caps it", 100 << 10, 0, 32 * mib, 800},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := Percent(c.live, c.roots, c.floor, 100)
			if got != c.want {
				t.Fatalf("Percent(%d, %d, %d) = %d, want %d", c.live, c.roots, c.floor, got, c.want)
			}
			if got == 100 {
				return
			}
			// Go's goal at that percent: the larger of the formula and
			// the scaled minimum; both at most the floor, one at it.
			formula := c.live + (c.live+c.roots)*uint64(got)/100
			minimum := uint64(heapMinimum) * uint64(got) / 100
			goal := max(formula, minimum)
			if goal < c.floor*99/100 || goal > c.floor*101/100 {
				t.Fatalf("percent %d gives a goal of %d, want about %d", got, goal, c.floor)
			}
		})
	}
}

func heapGoal() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// waitGoal collects and waits for the tuner's finalizer to set the goal
// within [lo, hi].
func waitGoal(t *testing.T, lo, hi uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.GC()
		g := heapGoal()
		if g >= lo && g <= hi {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("heap goal %d MiB, want between %d and %d MiB", g>>20, lo>>20, hi>>20)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestStartKeepsGoalAtFloor(t *testing.T) {
	const floor = 48 << 20
	before := heapGoal()
	if before >= floor/2 {
		t.Fatalf("test heap already large: goal %d MiB", before>>20)
	}
	stop := Start(floor, 100)
	waitGoal(t, floor*95/100, floor*105/100)

	// A live heap past half the floor: GOGC's own goal, twice the heap,
	// is above the floor and the tuner steps aside.
	keep := make([][]byte, 0, 64)
	for range 64 {
		keep = append(keep, make([]byte, 1<<20))
	}
	waitGoal(t, 2*64<<20*95/100, 2*(64<<20+8<<20))
	runtime.KeepAlive(keep)
	keep = nil

	stop()
	if p := debug.SetGCPercent(100); p != 100 {
		t.Fatalf("after stop GOGC is %d, want 100", p)
	}
	waitGoal(t, 0, floor/2)
}

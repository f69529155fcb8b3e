package robustness

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRobustness runs scenarios against real Ballast clusters and checks
// every history. Without settings it runs the fixed-seed subset CI runs:
// every fault at least once. Settings, from the environment:
//
//	ROBUSTNESS_FOR=30m        run random scenarios (fault × cluster size) for this long instead
//	ROBUSTNESS_SEED=7         the seed of the random scenarios (default: the time)
//	ROBUSTNESS_FAULTS=a,b     only these faults
//	ROBUSTNESS_DURATION=10s   traffic per scenario
//	ROBUSTNESS_REPORT=path    append each scenario's result to this file, as JSON lines
//	ROBUSTNESS_SUMMARY=path   write the run's summary (docs/robustness.md's figures) to this file
//	ROBUSTNESS_ARTIFACTS=dir  where failing histories are saved (porcupine's HTML view)
func TestRobustness(t *testing.T) {
	dur := envDuration(t, "ROBUSTNESS_DURATION", 8*time.Second)
	only := map[string]bool{}
	for _, f := range strings.Split(os.Getenv("ROBUSTNESS_FAULTS"), ",") {
		if f != "" {
			if _, ok := faultByName(f); !ok {
				t.Fatalf("ROBUSTNESS_FAULTS: unknown fault %q", f)
			}
			only[f] = true
		}
	}
	keep := func(s scenario) bool { return len(only) == 0 || only[s.Fault] }

	var report *json.Encoder
	if path := os.Getenv("ROBUSTNESS_REPORT"); path != "" {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		report = json.NewEncoder(f)
	}
	var results []*result
	defer func() {
		sum := summarize(results)
		t.Log("summary:\n" + sum)
		if path := os.Getenv("ROBUSTNESS_SUMMARY"); path != "" {
			if err := os.WriteFile(path, []byte(sum), 0o644); err != nil {
				t.Error(err)
			}
		}
	}()
	runOne := func(sc scenario) {
		t.Run(sc.String(), func(t *testing.T) {
			res := run(t, sc, 2*time.Minute)
			results = append(results, res)
			t.Log(res.summary())
			if report != nil {
				if err := report.Encode(res); err != nil {
					t.Error(err)
				}
			}
			for _, v := range res.Violations {
				t.Error(v)
			}
			for _, e := range res.NotBack {
				// A member restarted after a kill, a pause or a full disk
				// must come back (a corrupted one is judged apart).
				t.Errorf("a member did not come back: %s", e)
			}
			for _, c := range res.Corruption {
				if c.Panicked {
					t.Errorf("a member panicked on a corrupted file (%s)", c.What)
				}
			}
			if res.Saved != "" {
				t.Logf("history saved to %s", res.Saved)
			}
		})
	}

	if d := envDuration(t, "ROBUSTNESS_FOR", 0); d > 0 {
		seed := uint64(time.Now().UnixNano())
		if s := os.Getenv("ROBUSTNESS_SEED"); s != "" {
			var err error
			if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
				t.Fatalf("ROBUSTNESS_SEED: %v", err)
			}
		}
		t.Logf("random scenarios for %v from seed %d", d, seed)
		rng := rand.New(rand.NewPCG(seed, 0))
		for end := time.Now().Add(d); time.Now().Before(end) && !t.Failed(); {
			f := faults[rng.IntN(len(faults))]
			sizes := []int{1, 3, 5}
			size := sizes[rng.IntN(len(sizes))]
			sc := scenario{Fault: f.name, Size: size, Seed: rng.Uint64(), Duration: dur}
			if size < f.minSize || !keep(sc) {
				continue
			}
			runOne(sc)
		}
		return
	}
	for _, sc := range ciScenarios(dur) {
		if keep(sc) {
			runOne(sc)
		}
	}
}

// ciScenarios is the fixed subset: every fault on three members (those
// that need three), the ones that apply to a single member on one, and the
// quorum-sensitive ones on five.
func ciScenarios(dur time.Duration) []scenario {
	var out []scenario
	for i, f := range faults {
		if f.minSize <= 3 {
			out = append(out, scenario{Fault: f.name, Size: 3, Seed: uint64(i + 1), Duration: dur})
		}
	}
	// On one member kill-all is kill-leader.
	for i, name := range []string{"kill-leader", "pause-leader", "disk-full"} {
		out = append(out, scenario{Fault: name, Size: 1, Seed: uint64(100 + i), Duration: dur})
	}
	for i, name := range []string{"kill-leader", "partition-leader-minority", "partition-minority", "replace-member"} {
		out = append(out, scenario{Fault: name, Size: 5, Seed: uint64(200 + i), Duration: dur})
	}
	return out
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return d
}

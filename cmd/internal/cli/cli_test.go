package cli

import "testing"

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{
		0:                  "0 B",
		1023:               "1023 B",
		1024:               "1.0 KiB",
		1536:               "1.5 KiB",
		1<<20 - 1:          "1.0 MiB",
		1258291:            "1.2 MiB",
		25 << 20:           "25.0 MiB",
		8 << 30:            "8.0 GiB",
		3 << 40:            "3.0 TiB",
		1<<63 - 1:          "8.0 EiB",
		2*1024*1024 - 1024: "2.0 MiB",
	} {
		if got := HumanBytes(n); got != want {
			t.Errorf("HumanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

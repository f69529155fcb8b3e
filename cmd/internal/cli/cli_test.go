package cli

import (
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
)

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

func TestParseInterspersed(t *testing.T) {
	tests := []struct {
		args    []string
		pos     []string
		cons    string
		total   int
		wantErr bool
	}{
		{args: []string{"foo"}, pos: []string{"foo"}, cons: "l", total: 1},
		{args: []string{"foo", "--consistency", "s"}, pos: []string{"foo"}, cons: "s", total: 1},
		{args: []string{"--total=5", "a", "b", "--consistency=s"}, pos: []string{"a", "b"}, cons: "s", total: 5},
		{args: []string{"a", "--total", "7", "b"}, pos: []string{"a", "b"}, cons: "l", total: 7},
		{args: []string{"--", "-weird-key", "--total=3"}, pos: []string{"-weird-key", "--total=3"}, cons: "l", total: 1},
		{args: []string{"a", "--nope"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			cons := fs.String("consistency", "l", "")
			total := fs.Int("total", 1, "")
			pos, err := ParseInterspersed(fs, tt.args)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if !slices.Equal(pos, tt.pos) || *cons != tt.cons || *total != tt.total {
				t.Fatalf("got pos=%q consistency=%q total=%d", pos, *cons, *total)
			}
		})
	}
}

// closedPort returns a 127.0.0.1 address nothing listens on.

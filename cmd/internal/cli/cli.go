// Package cli holds what Ballast's commands print alike: sizes, flag
// errors, one-row tables or JSON, and progress.
package cli

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// HumanBytes formats n in binary units with one decimal: "512 B",
// "1.2 MiB".
func HumanBytes(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	const units = "KMGTPE"
	f := float64(n) / 1024
	i := 0
	// Move up a unit rather than print "1024.0 KiB".
	for f >= 1024-0.05 && i < len(units)-1 {
		f /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %ciB", f, units[i])
}

// RewordFlagError turns the flag package's "flag provided but not defined:
// -x" into "unknown flag -x".
func RewordFlagError(err error) error {
	if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: "); ok {
		return fmt.Errorf("unknown flag -%s", name)
	}
	return err
}

// FormatFlag registers -w and --write-out, etcdctl's output format flag,
// into dst (default "table").
func FormatFlag(fs *flag.FlagSet, dst *string) {
	fs.StringVar(dst, "w", "table", "output `format`: table or json")
	fs.StringVar(dst, "write-out", "table", "same as -w")
}

// CheckFormat accepts the formats every command prints: table and json.
func CheckFormat(format string) error {
	if format != "table" && format != "json" {
		return fmt.Errorf("-w must be table or json, not %q", format)
	}
	return nil
}

// ParseInterspersed parses flags that may come before, between or after
// positional arguments ("range foo --consistency s"), returning the
// positional ones. After "--" everything is positional.
func ParseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// UsageError reports a command-line mistake of `ballast command` and
// returns exit code 2.
func UsageError(stderr io.Writer, command string, err error) int {
	fmt.Fprintf(stderr, "ballast %s: %v\nRun 'ballast %s -h' for usage.\n", command, err, command)
	return 2
}

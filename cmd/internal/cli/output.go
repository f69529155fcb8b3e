package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// WriteRow prints v as one line of JSON (format "json"), or as a table:
// header, then one row.
func WriteRow(w io.Writer, format string, v any, header, rowFormat string, row ...any) {
	if format == "json" {
		b, _ := json.Marshal(v)
		fmt.Fprintf(w, "%s\n", b)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	fmt.Fprintf(tw, rowFormat, row...)
	tw.Flush()
}

// Progress prints how far a long operation is, at most once a second; an
// operation that ends within the first second prints nothing.
type Progress struct {
	w           io.Writer
	line        func(done, total int64, perSec float64) string
	start, last time.Time
	done, total int64
	printed     bool
}

// NewProgress reports to w with lines made by line (total may be 0:
// unknown).
func NewProgress(w io.Writer, line func(done, total int64, perSec float64) string) *Progress {
	now := time.Now()
	return &Progress{w: w, line: line, start: now, last: now}
}

// Report records that done of total are done.
func (p *Progress) Report(done, total int64) {
	p.done, p.total = done, total
	if now := time.Now(); now.Sub(p.last) >= time.Second {
		p.last = now
		p.print(now)
	}
}

func (p *Progress) print(now time.Time) {
	io.WriteString(p.w, p.line(p.done, p.total, float64(p.done)/max(now.Sub(p.start).Seconds(), 0.001)))
	p.printed = true
}

// Done prints the final line if any progress was shown.
func (p *Progress) Done() {
	if p.printed {
		p.print(time.Now())
	}
}

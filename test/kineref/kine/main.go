// Command kine is the reference kine (github.com/k3s-io/kine) at the version
// this module pins: the SQL bridge's tests point it at Ballast's mirror and
// import what it writes.
package main

import (
	"os"

	"github.com/k3s-io/kine/pkg/app"
)

func main() {
	if err := app.New().Run(os.Args); err != nil {
		os.Exit(1)
	}
}

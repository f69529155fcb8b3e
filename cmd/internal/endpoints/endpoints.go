// Package endpoints reads the --endpoints flag the ballast commands share
// with etcdctl.
package endpoints

import "strings"

// Split returns the comma-separated endpoints of s, trimmed, without empty
// ones.
func Split(s string) []string {
	var eps []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			eps = append(eps, e)
		}
	}
	return eps
}

// Command etcd is the reference etcd server, built from the released etcd
// module so that the compatibility suite can compare Ballast against it.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }

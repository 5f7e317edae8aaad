// Command etcd is etcd's server, built from its published Go module
// (go.etcd.io/etcd/server/v3) for the local e2e control plane.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}

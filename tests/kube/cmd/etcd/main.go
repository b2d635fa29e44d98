// etcd built from the same module graph as kube-apiserver, so one `go build` gives both.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}

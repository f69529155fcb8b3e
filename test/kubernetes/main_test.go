package kubernetes

import (
	"flag"
	"io"
	"os"
	"testing"

	"google.golang.org/grpc/grpclog"
	"k8s.io/klog/v2"
)

// TestMain keeps the storage layer's and gRPC's logs out of the output,
// which then holds the test results and the suite's summary lines; a
// failing test reports what failed itself. KUBE_STORAGE_LOGS=1 keeps them.
func TestMain(m *testing.M) {
	if os.Getenv("KUBE_STORAGE_LOGS") == "" {
		fs := flag.NewFlagSet("klog", flag.ContinueOnError)
		klog.InitFlags(fs)
		fs.Set("logtostderr", "false")
		fs.Set("alsologtostderr", "false")
		fs.Set("stderrthreshold", "FATAL")
		klog.SetOutput(io.Discard)
		grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, io.Discard, os.Stderr))
	}
	os.Exit(m.Run())
}

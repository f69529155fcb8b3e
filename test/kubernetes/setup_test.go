// Package kubernetes runs Kubernetes' own storage conformance tests (the
// exported Run* functions of k8s.io/apiserver/pkg/storage/testing) on the
// real etcd3 store kube-apiserver uses, and on the watch cache over it,
// against a three-member cluster: Ballast's, and etcd v3.7's for
// comparison.
//
// Upstream runs each test on a fresh embedded etcd. Here every test gets a
// wiped keyspace on one long-lived cluster, its own client, store and
// compactor, and tests run one after another: their revision arithmetic
// assumes nobody else writes.
package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/kubernetes"
	"go.uber.org/zap"

	"k8s.io/apimachinery/pkg/api/apitesting"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apiserver/pkg/apis/example"
	examplev1 "k8s.io/apiserver/pkg/apis/example/v1"
	"k8s.io/apiserver/pkg/features"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/etcd3"
	etcdfeature "k8s.io/apiserver/pkg/storage/feature"
	storagetesting "k8s.io/apiserver/pkg/storage/testing"
	"k8s.io/apiserver/pkg/storage/value"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/utils/clock"
)

var (
	scheme = runtime.NewScheme()
	codecs = serializer.NewCodecFactory(scheme)
)

// storedPrefix is what the test transformer puts before every stored value.
const storedPrefix = "test!"

func init() {
	metav1.AddToGroupVersion(scheme, metav1.SchemeGroupVersion)
	utilruntime.Must(example.AddToScheme(scheme))
	utilruntime.Must(examplev1.AddToScheme(scheme))
}

func newPod() runtime.Object     { return &example.Pod{} }
func newPodList() runtime.Object { return &example.PodList{} }

// etcdStore is what the etcd3 store offers beyond storage.Interface.
type etcdStore interface {
	storage.Interface
	Close()
	CompactRevision() int64
	EnableResourceSizeEstimation(storage.KeysFunc) error
}

// env is one test's client and store.
type env struct {
	ctx     context.Context
	client  *kubernetes.Client
	kv      *storagetesting.KVRecorder
	lists   *storagetesting.KubernetesRecorder
	codec   runtime.Codec
	prefix  *storagetesting.PrefixTransformer // the transformer's default, which counts reads
	swap    *swapTransformer                  // what the store uses: prefix, or a test's override
	store   etcdStore
	keyBase string // the etcd prefix the store's keys live under
}

type setup struct {
	codec       runtime.Codec
	transformer value.Transformer // nil: the counting prefix transformer
}

type option func(*setup)

func withCodec(c runtime.Codec) option            { return func(s *setup) { s.codec = c } }
func withTransformer(tr value.Transformer) option { return func(s *setup) { s.transformer = tr } }

var podsResource = schema.GroupResource{Resource: "pods"}

// compactWait is what upstream's compaction helper waits on: the store's
// view of the compaction, which it follows only with ListFromCacheSnapshot.
func (e *env) compactWait() func() int64 {
	if !utilfeature.DefaultFeatureGate.Enabled(features.ListFromCacheSnapshot) {
		return nil
	}
	return e.store.CompactRevision
}

// endpoints of the cluster under test, set by the top-level test.
var endpoints []string

// newClient connects to the cluster as kube-apiserver's storage does,
// recording reads as upstream's test server does. It is closed last.
func newClient(t *testing.T) (*kubernetes.Client, *storagetesting.KVRecorder, *storagetesting.KubernetesRecorder) {
	t.Helper()
	c, err := kubernetes.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	lists := storagetesting.NewKubernetesRecorder(c.Kubernetes)
	kv := storagetesting.NewKVRecorder(c.KV, lists)
	c.KV = kv
	c.Kubernetes = lists
	return c, kv, lists
}

// wipe deletes every key, so a test starts from an empty keyspace (and a
// compact_rev_key that was never written) as on upstream's fresh etcd.
func wipe(t *testing.T, c *clientv3.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Delete(ctx, "\x00", clientv3.WithFromKey()); err != nil {
		t.Fatalf("wiping the keyspace: %v", err)
	}
}

// resetFeatureChecker gives the test a fresh view of what the server
// supports (upstream does this where it toggles EtcdRangeStream): the
// checker remembers endpoints for the whole process otherwise.
func resetFeatureChecker(t *testing.T) {
	orig := etcdfeature.DefaultFeatureSupportChecker
	etcdfeature.DefaultFeatureSupportChecker = etcdfeature.NewDefaultFeatureSupportChecker()
	t.Cleanup(func() { etcdfeature.DefaultFeatureSupportChecker = orig })
}

// newEnv builds the etcd3 store as upstream's testSetup does, on a wiped
// keyspace. Feature gates must be set before it.
func newEnv(t *testing.T, opts ...option) *env {
	t.Helper()
	s := setup{codec: apitesting.TestCodec(codecs, examplev1.SchemeGroupVersion)}
	for _, o := range opts {
		o(&s)
	}
	prefix := storagetesting.NewPrefixTransformer([]byte(storedPrefix), false)
	tr := s.transformer
	if tr == nil {
		tr = prefix
	}
	swap := &swapTransformer{cur: tr}
	lease := etcd3.NewDefaultLeaseManagerConfig()
	lease.ReuseDurationSeconds = 1              // upstream's test setting: the tests wait at most 30s
	e := openStore(t, s.codec, "", swap, lease) // upstream's prefix: keys are /pods/...
	e.prefix, e.swap = prefix, swap
	return e
}

// openStore connects a new client to a wiped keyspace and builds the etcd3
// store on it, as upstream's test setups do. Feature gates must be set
// before it.
func openStore(t *testing.T, codec runtime.Codec, prefix string, tr value.Transformer, lease etcd3.LeaseManagerConfig) *env {
	t.Helper()
	resetFeatureChecker(t)
	client, kv, lists := newClient(t)
	wipe(t, client.Client)
	versioner := storage.APIObjectVersioner{}
	compactor := etcd3.NewCompactor(client.Client, 0, clock.RealClock{}, nil)
	t.Cleanup(compactor.Stop)
	st, err := etcd3.New(client, compactor, codec, newPod, newPodList, prefix, "/pods/",
		podsResource, tr, lease, etcd3.NewDefaultDecoder(codec, versioner), versioner)
	if err != nil {
		t.Fatalf("etcd3.New: %v", err)
	}
	t.Cleanup(st.Close)
	e := &env{ctx: context.Background(), client: client, kv: kv, lists: lists, codec: codec, store: st}
	if prefix != "" {
		e.keyBase = path.Join("/", prefix) // as the store joins its keys
	}
	return e
}

// swapTransformer lets a test replace the store's transformer while it
// runs, as upstream's tests do by assigning the store's unexported field.
type swapTransformer struct {
	mu  sync.RWMutex
	cur value.Transformer
}

func (s *swapTransformer) get() value.Transformer {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cur
}

func (s *swapTransformer) set(tr value.Transformer) {
	s.mu.Lock()
	s.cur = tr
	s.mu.Unlock()
}

func (s *swapTransformer) TransformFromStorage(ctx context.Context, data []byte, dataCtx value.Context) ([]byte, bool, error) {
	return s.get().TransformFromStorage(ctx, data, dataCtx)
}

func (s *swapTransformer) TransformToStorage(ctx context.Context, data []byte, dataCtx value.Context) ([]byte, error) {
	return s.get().TransformToStorage(ctx, data, dataCtx)
}

// overridable is a store whose transformer tests may change
// (storagetesting.InterfaceWithPrefixTransformer and
// InterfaceWithTransformerOverride).
type overridable struct {
	storage.Interface
	swap *swapTransformer
}

func (e *env) overridable(s storage.Interface) *overridable {
	return &overridable{Interface: s, swap: e.swap}
}

func (o *overridable) UpdatePrefixTransformer(modify storagetesting.PrefixTransformerModifier) func() {
	orig := o.swap.get()
	cp := *orig.(*storagetesting.PrefixTransformer)
	o.swap.set(modify(&cp))
	return func() { o.swap.set(orig) }
}

func (o *overridable) UpdateTransformer(modify storagetesting.TransformerModifier) func() {
	orig := o.swap.get()
	o.swap.set(modify(orig))
	return func() { o.swap.set(orig) }
}

// checkStored is upstream's checkStorageInvariants: the stored object
// decodes and carries neither resourceVersion nor selfLink.
func (e *env) checkStored() storagetesting.KeyValidation {
	return func(ctx context.Context, t *testing.T, key string) {
		resp, err := e.client.KV.Get(ctx, e.keyBase+key)
		if err != nil {
			t.Fatalf("Get %s: %v", key, err)
		}
		if len(resp.Kvs) == 0 {
			t.Fatalf("expecting non empty result on key: %s", key)
		}
		decoded, err := runtime.Decode(e.codec, resp.Kvs[0].Value[len(storedPrefix):])
		if err != nil {
			t.Fatalf("decoding the stored object: %v\n%s", err, resp.Kvs[0].Value)
		}
		pod := decoded.(*example.Pod)
		if pod.ResourceVersion != "" {
			t.Errorf("stored object should have empty resource version")
		}
		if pod.SelfLink != "" {
			t.Errorf("stored output should have empty selfLink")
		}
	}
}

// maxListLimit is the etcd3 store's largest page (its unexported maxLimit).
const maxListLimit = 10000

// checkCalls is upstream's checkStorageCallsInvariants: how many objects a
// list decoded and how many reads it sent, pages doubling up to maxLimit.
func (e *env) checkCalls() storagetesting.CallsValidation {
	return func(t *testing.T, pageSize, processed uint64) {
		if reads := e.prefix.GetReadsAndReset(); reads != processed {
			t.Errorf("unexpected reads: %d, expected: %d", reads, processed)
		}
		calls := uint64(1)
		if pageSize != 0 {
			limit := pageSize
			for sum := uint64(1); sum < processed; {
				limit = min(limit*2, maxListLimit)
				sum += limit
				calls++
			}
		}
		if reads := e.kv.GetReadsAndReset() + e.kv.GetStreamReadsAndReset(); reads != calls {
			t.Fatalf("unexpected reads: %d, want: %d", reads, calls)
		}
	}
}

// increaseRV is upstream's increaseRVFunc: one unrelated write.
func (e *env) increaseRV() storagetesting.IncreaseRVFunc {
	return func(ctx context.Context, t *testing.T) int64 {
		resp, err := e.client.KV.Put(ctx, "increaseRV", "ok")
		if err != nil {
			t.Fatalf("increaseRV: %v", err)
		}
		return resp.Header.Revision
	}
}

// compaction is upstream's compactStorage: Kubernetes' own compaction (a
// compact_rev_key txn, then Compact), then, when the store watches the
// compaction key, a wait until it has seen it.
func (e *env) compaction(waitFor func() int64) storagetesting.Compaction {
	return func(ctx context.Context, t *testing.T, resourceVersion string) {
		rv, err := storage.APIObjectVersioner{}.ParseResourceVersion(resourceVersion)
		if err != nil {
			t.Fatal(err)
		}
		var current int64
		current, _, _, err = etcd3.Compact(ctx, e.client.Client, current, int64(rv))
		if err != nil {
			_, _, _, err = etcd3.Compact(ctx, e.client.Client, current, int64(rv))
		}
		if err != nil {
			t.Fatal(err)
		}
		if waitFor == nil {
			return
		}
		waitRev(t, "compaction", waitFor, int64(rv))
	}
}

// waitRev polls get until it returns rv, for up to 30s.
func waitRev(t *testing.T, what string, get func() int64, rv int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for get() != rv {
		if time.Now().After(deadline) {
			t.Fatalf("%s to %d not observed (at %d)", what, rv, get())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// keysOf lists the keys under a prefix (the store's getKeys).
func (e *env) keysOf(prefix string) storage.KeysFunc {
	return func(ctx context.Context) ([]string, error) {
		resp, err := e.client.KV.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return nil, err
		}
		keys := make([]string, 0, len(resp.Kvs))
		for _, kv := range resp.Kvs {
			keys = append(keys, string(kv.Key))
		}
		return keys, nil
	}
}

// corruptErr is the error the etcd3 store reports for data its transformer
// cannot read (upstream builds the unexported type directly).
func corruptErr() error {
	_, _, err := etcd3.WithCorruptObjErrorHandlingTransformer(failingTransformer{}).TransformFromStorage(context.Background(), nil, value.DefaultContext(nil))
	return err
}

type failingTransformer struct{}

func (failingTransformer) TransformFromStorage(context.Context, []byte, value.Context) ([]byte, bool, error) {
	return nil, false, fmt.Errorf("bits flipped")
}

func (failingTransformer) TransformToStorage(_ context.Context, data []byte, _ value.Context) ([]byte, error) {
	return data, nil
}

// failableTransformer and failableCodec fail on demand (upstream's
// testTransformer and testCodec).
type failableTransformer struct {
	value.Transformer
	fail atomic.Bool
}

func (f *failableTransformer) setFailing(b bool) { f.fail.Store(b) }

func (f *failableTransformer) TransformFromStorage(ctx context.Context, data []byte, dataCtx value.Context) ([]byte, bool, error) {
	if f.fail.Load() {
		return nil, false, errors.New("synthetic error")
	}
	return f.Transformer.TransformFromStorage(ctx, data, dataCtx)
}

type failableCodec struct {
	runtime.Codec
	fail atomic.Bool
}

func (f *failableCodec) setFailing(b bool) { f.fail.Store(b) }

func (f *failableCodec) Decode(data []byte, defaults *schema.GroupVersionKind, into runtime.Object) (runtime.Object, *schema.GroupVersionKind, error) {
	if f.fail.Load() {
		return nil, nil, errors.New("synthetic error")
	}
	return f.Codec.Decode(data, defaults, into)
}

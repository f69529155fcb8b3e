package kubernetes

import (
	"context"
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/apitesting"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/apis/example"
	examplev1 "k8s.io/apiserver/pkg/apis/example/v1"
	example2v1 "k8s.io/apiserver/pkg/apis/example2/v1"
	"k8s.io/apiserver/pkg/features"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/cacher"
	"k8s.io/apiserver/pkg/storage/etcd3"
	storagetesting "k8s.io/apiserver/pkg/storage/testing"
	"k8s.io/apiserver/pkg/storage/value"
	"k8s.io/apiserver/pkg/storage/value/encrypt/identity"
	clientfeatures "k8s.io/client-go/features"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
)

// The watch cache's tests use a scheme of their own and protobuf.
var (
	cacherScheme = runtime.NewScheme()
	cacherCodecs = serializer.NewCodecFactory(cacherScheme)
	protoCodec   runtime.Codec
)

func init() {
	metav1.AddToGroupVersion(cacherScheme, metav1.SchemeGroupVersion)
	utilruntime.Must(example.AddToScheme(cacherScheme))
	utilruntime.Must(examplev1.AddToScheme(cacherScheme))
	utilruntime.Must(example2v1.AddToScheme(cacherScheme))
	utilruntime.Must(metav1.AddMetaToScheme(cacherScheme))
	pb := protobuf.NewSerializer(cacherScheme, cacherScheme)
	protoCodec = cacherCodecs.CodecForVersions(pb, pb, schema.GroupVersions{examplev1.SchemeGroupVersion}, nil)
}

// cacherEnv is the watch cache over the etcd3 store, as upstream's cacher
// testSetupWithEtcdServer builds it.
type cacherEnv struct {
	*env
	delegator *cacher.CacheDelegator
}

type cacherSetup struct {
	keyFunc      func(runtime.Object) (string, error)
	indexerFuncs storage.IndexerFuncs
	indexers     cache.Indexers
	codec        runtime.Codec
	transformer  value.Transformer
}

type cacherOption func(*cacherSetup)

func clusterScoped(s *cacherSetup) {
	s.keyFunc = func(obj runtime.Object) (string, error) { return storage.NoNamespaceKeyFunc("/pods/", obj) }
}

// byNodeAndNamespace mirrors the pod registry's indexes.
func byNodeAndNamespace(s *cacherSetup) {
	s.indexerFuncs = storage.IndexerFuncs{"spec.nodeName": func(obj runtime.Object) string {
		if pod, ok := obj.(*example.Pod); ok {
			return pod.Spec.NodeName
		}
		return ""
	}}
	s.indexers = cache.Indexers{
		"f:spec.nodeName":      func(obj any) ([]string, error) { return []string{obj.(*example.Pod).Spec.NodeName}, nil },
		"f:metadata.namespace": func(obj any) ([]string, error) { return []string{obj.(*example.Pod).Namespace}, nil },
	}
}

func cacherCodec(c runtime.Codec) cacherOption { return func(s *cacherSetup) { s.codec = c } }
func cacherTransformer(tr value.Transformer) cacherOption {
	return func(s *cacherSetup) { s.transformer = tr }
}

func podAttrs(obj runtime.Object) (labels.Set, fields.Set, error) {
	pod, ok := obj.(*example.Pod)
	if !ok {
		return nil, nil, fmt.Errorf("not a pod")
	}
	return labels.Set(pod.Labels), fields.Set{
		"spec.nodeName":      pod.Spec.NodeName,
		"spec.restartPolicy": string(pod.Spec.RestartPolicy),
		"status.phase":       string(pod.Status.Phase),
		"metadata.name":      pod.Name,
		"metadata.namespace": pod.Namespace,
	}, nil
}

func newCacherEnv(t *testing.T, opts ...cacherOption) *cacherEnv {
	t.Helper()
	s := cacherSetup{
		keyFunc:     func(obj runtime.Object) (string, error) { return storage.NamespaceKeyFunc("/pods/", obj) },
		codec:       protoCodec,
		transformer: identity.NewEncryptCheckTransformer(),
	}
	for _, o := range opts {
		o(&s)
	}
	e := openStore(t, s.codec, "/registry", s.transformer, etcd3.NewDefaultLeaseManagerConfig())
	st := e.store
	versioner := storage.APIObjectVersioner{}

	// Upstream injects one list error so the relist path runs too.
	listErrors := 1
	if clientfeatures.FeatureGates().Enabled(clientfeatures.WatchListClient) {
		listErrors = 0 // the reflector watches instead of listing
	}
	wrapped := &storagetesting.StorageInjectingListErrors{Interface: st, Errors: listErrors}
	c, err := cacher.NewCacherFromConfig(cacher.Config{
		Storage:             wrapped,
		Versioner:           versioner,
		GroupResource:       podsResource,
		EventsHistoryWindow: cacher.DefaultEventFreshDuration,
		ResourcePrefix:      "/pods/",
		KeyFunc:             s.keyFunc,
		GetAttrsFunc:        podAttrs,
		NewFunc:             newPod,
		NewListFunc:         newPodList,
		IndexerFuncs:        s.indexerFuncs,
		Indexers:            &s.indexers,
		Codec:               s.codec,
		Clock:               clock.RealClock{},
	})
	if err != nil {
		t.Fatalf("cacher: %v", err)
	}
	t.Cleanup(c.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), wait.ForeverTestTimeout)
	defer cancel()
	if err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		return wrapped.ErrorsConsumed()
	}); err != nil {
		t.Fatalf("injected list errors not consumed: %v", err)
	}
	if err := c.Wait(ctx); err != nil {
		t.Fatalf("watch cache not ready: %v", err)
	}
	d := cacher.NewCacheDelegator(c, wrapped)
	t.Cleanup(d.Stop)
	return &cacherEnv{env: e, delegator: d}
}

// compaction is upstream's compactStore: compact, then wait until the
// store and the watch cache have seen it. Upstream pokes the cache's
// compactor; here the wait covers its 15s poll.
func (c *cacherEnv) compaction() storagetesting.Compaction {
	if c.compactWait() == nil {
		return c.env.compaction(nil)
	}
	inner := c.env.compaction(c.store.CompactRevision)
	return func(ctx context.Context, t *testing.T, resourceVersion string) {
		inner(ctx, t, resourceVersion)
		rv, _ := storage.APIObjectVersioner{}.ParseResourceVersion(resourceVersion)
		waitRev(t, "the watch cache's compaction", c.delegator.CompactRevision, int64(rv))
	}
}

// createAndWait is upstream's createWrapper: a Create returns once the
// watch cache serves the object.
type createAndWait struct {
	*cacher.CacheDelegator
}

func (c *createAndWait) Create(ctx context.Context, key string, obj, out runtime.Object, ttl uint64) error {
	if err := c.CacheDelegator.Create(ctx, key, obj, out, ttl); err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, wait.ForeverTestTimeout, true, func(ctx context.Context) (bool, error) {
		cur := &example.Pod{}
		err := c.CacheDelegator.Get(ctx, key, storage.GetOptions{ResourceVersion: "0"}, cur)
		if storage.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		return apiequality.Semantic.DeepEqual(cur, out), nil
	})
}

func noCalls(t *testing.T, pageSize, processed uint64) {} // upstream: the cacher passes paging to etcd3

func noValidation(ctx context.Context, t *testing.T, key string) {} // upstream: creates pass through

// cached is a test on the default watch cache.
func cached(name string, run func(c *cacherEnv, t *testing.T), opts ...cacherOption) suiteTest {
	return suiteTest{name: name, run: func(t *testing.T) { run(newCacherEnv(t, opts...), t) }}
}

// cacherSuite is every storagetesting.Run* call of k8s.io/apiserver
// v0.37.2's pkg/storage/cacher/cacher_test.go, in its order. Upstream's
// empty TODO tests are not listed.
func cacherSuite() []suiteTest {
	tests := []suiteTest{cached("Create", func(c *cacherEnv, t *testing.T) { storagetesting.RunTestCreate(c.ctx, t, c.delegator, noValidation) })}
	for _, r := range basicRuns {
		tests = append(tests, cached(r.name, func(c *cacherEnv, t *testing.T) { r.run(c.ctx, t, c.delegator) }))
	}
	tests = append(tests,
		suiteTest{name: "DeleteWithConflictAndMissingExpectedTransformOrDecodeError", run: func(t *testing.T) {
			gate(t, features.AllowUnsafeMalformedObjectDeletion, true)
			tr := &failableTransformer{Transformer: identity.NewEncryptCheckTransformer()}
			c := newCacherEnv(t, cacherTransformer(tr))
			storagetesting.RunTestDeleteWithConflictAndMissingExpectedTransformOrDecodeError(c.ctx, t, c.delegator, tr.setFailing)
		}},
		suiteTest{name: "DeleteWithConflictAndExpectedTransformError", run: func(t *testing.T) {
			gate(t, features.AllowUnsafeMalformedObjectDeletion, true)
			tr := &failableTransformer{Transformer: identity.NewEncryptCheckTransformer()}
			c := newCacherEnv(t, cacherTransformer(tr))
			storagetesting.RunTestDeleteExpectedTransformOrDecodeError(c.ctx, t, c.delegator, tr.setFailing)
		}},
		suiteTest{name: "DeleteWithConflictAndExpectedDecodeError", run: func(t *testing.T) {
			gate(t, features.AllowUnsafeMalformedObjectDeletion, true)
			// The test decodes bytes it made undecodable on purpose.
			etcd3.TestOnlySetFatalOnDecodeError(t, false)
			codec := &failableCodec{Codec: apitesting.TestCodec(cacherCodecs, examplev1.SchemeGroupVersion)}
			c := newCacherEnv(t, cacherCodec(codec))
			storagetesting.RunTestDeleteExpectedTransformOrDecodeError(c.ctx, t, c.delegator, codec.setFailing)
		}},
		suiteTest{name: "DeleteWithSuggestionAndMissingExpectedTransformOrDecodeError", run: func(t *testing.T) {
			gate(t, features.AllowUnsafeMalformedObjectDeletion, true)
			c := newCacherEnv(t)
			storagetesting.RunTestDeleteWithSuggestionAndMissingExpectedTransformOrDecodeError(c.ctx, t, c.delegator)
		}},
		cached("PreconditionalDeleteWithSuggestion", func(c *cacherEnv, t *testing.T) {
			storagetesting.RunTestPreconditionalDeleteWithSuggestion(c.ctx, t, c.delegator)
		}),
		cached("PreconditionalDeleteWithSuggestionPass", func(c *cacherEnv, t *testing.T) {
			storagetesting.RunTestPreconditionalDeleteWithOnlySuggestionPass(c.ctx, t, c.delegator)
		}),
		cached("ListPaging", func(c *cacherEnv, t *testing.T) { storagetesting.RunTestListPaging(c.ctx, t, c.delegator) }),
	)
	for _, snapshot := range []bool{true, false} {
		// Upstream gives each of these an etcd of its own; List checks the
		// revisions of the lists the cache sends to etcd, counted from 1.
		lists := func(name string, run func(c *cacherEnv, t *testing.T)) suiteTest {
			return suiteTest{name: fmt.Sprintf("Lists/ListFromCacheSnapshot=%v/%s", snapshot, name), fresh: name == "List", run: func(t *testing.T) {
				gate(t, features.ListFromCacheSnapshot, snapshot)
				run(newCacherEnv(t), t)
			}}
		}
		tests = append(tests,
			lists("List", func(c *cacherEnv, t *testing.T) {
				storagetesting.RunTestList(c.ctx, t, c.delegator, c.compaction(), true, c.lists)
			}),
			lists("ConsistentList", func(c *cacherEnv, t *testing.T) {
				storagetesting.RunTestConsistentList(c.ctx, t, c.delegator, c.increaseRV(), true, true, snapshot)
			}),
			lists("GetListNonRecursive", func(c *cacherEnv, t *testing.T) {
				storagetesting.RunTestGetListNonRecursive(c.ctx, t, c.increaseRV(), c.delegator)
			}),
		)
	}
	tests = append(tests,
		suiteTest{name: "CompactRevision", run: func(t *testing.T) {
			gate(t, features.ListFromCacheSnapshot, true)
			c := newCacherEnv(t)
			storagetesting.RunTestCompactRevision(c.ctx, t, c.delegator, c.increaseRV(), c.compaction())
		}},
		cached("GetListRecursivePrefix", func(c *cacherEnv, t *testing.T) { storagetesting.RunTestGetListRecursivePrefix(c.ctx, t, c.delegator) }),
		cached("ListContinuation", func(c *cacherEnv, t *testing.T) {
			storagetesting.RunTestListContinuation(c.ctx, t, c.delegator, noCalls)
		}),
		cached("ListPaginationRareObject", func(c *cacherEnv, t *testing.T) {
			storagetesting.RunTestListPaginationRareObject(c.ctx, t, c.delegator, noCalls)
		}),
		cached("ListContinuationWithFilter", func(c *cacherEnv, t *testing.T) {
			storagetesting.RunTestListContinuationWithFilter(c.ctx, t, c.delegator, noCalls)
		}),
		cached("NamespaceScopedList", func(c *cacherEnv, t *testing.T) { storagetesting.RunTestNamespaceScopedList(c.ctx, t, c.delegator) }, byNodeAndNamespace),
		cached("GuaranteedUpdateWithTTL", func(c *cacherEnv, t *testing.T) { storagetesting.RunTestGuaranteedUpdateWithTTL(c.ctx, t, c.delegator) }),
		cached("GuaranteedUpdateWithConflict", func(c *cacherEnv, t *testing.T) {
			storagetesting.RunTestGuaranteedUpdateWithConflict(c.ctx, t, c.delegator)
		}),
		cached("GuaranteedUpdateWithSuggestionAndConflict", func(c *cacherEnv, t *testing.T) {
			storagetesting.RunTestGuaranteedUpdateWithSuggestionAndConflict(c.ctx, t, c.delegator)
		}),
	)
	for _, sizeBased := range []bool{true, false} {
		tests = append(tests, suiteTest{name: fmt.Sprintf("Stats/SizeBasedListCostEstimate=%v", sizeBased), run: func(t *testing.T) {
			gate(t, features.SizeBasedListCostEstimate, sizeBased)
			c := newCacherEnv(t)
			storagetesting.RunTestStats(c.ctx, t, c.delegator, protoCodec, identity.NewEncryptCheckTransformer(), sizeBased)
		}})
	}
	tests = append(tests, cached("KeySchema", func(c *cacherEnv, t *testing.T) { storagetesting.RunTestKeySchema(c.ctx, t, c.delegator) }))

	w := func(name string, run func(c *cacherEnv, t *testing.T), opts ...cacherOption) suiteTest {
		return cached("Watch/"+name, run, opts...)
	}
	tests = append(tests,
		w("Watch", func(c *cacherEnv, t *testing.T) { storagetesting.RunTestWatch(c.ctx, t, c.delegator) }),
		// Upstream's second half edits the watch cache's internals to
		// simulate a compaction; without them the test ends with a skip
		// after its first half, which runs.
		w("WatchFromZero", func(c *cacherEnv, t *testing.T) { storagetesting.RunTestWatchFromZero(c.ctx, t, c.delegator, nil) }),
		w("DeleteTriggerWatch", func(c *cacherEnv, t *testing.T) { storagetesting.RunTestDeleteTriggerWatch(c.ctx, t, c.delegator) }),
		w("WatchFromNonZero", func(c *cacherEnv, t *testing.T) { storagetesting.RunTestWatchFromNonZero(c.ctx, t, c.delegator) }),
		w("DelayedWatchDelivery", func(c *cacherEnv, t *testing.T) { storagetesting.RunTestDelayedWatchDelivery(c.ctx, t, c.delegator) }),
		w("WatcherTimeout", func(c *cacherEnv, t *testing.T) { storagetesting.RunTestWatcherTimeout(c.ctx, t, c.delegator) }),
		w("WatchDeleteEventObjectHaveLatestRV", func(c *cacherEnv, t *testing.T) {
			storagetesting.RunTestWatchDeleteEventObjectHaveLatestRV(c.ctx, t, c.delegator)
		}),
		w("WatchInitializationSignal", func(c *cacherEnv, t *testing.T) {
			storagetesting.RunTestWatchInitializationSignal(c.ctx, t, c.delegator)
		}),
		w("ClusterScopedWatch", func(c *cacherEnv, t *testing.T) { storagetesting.RunTestClusterScopedWatch(c.ctx, t, c.delegator) },
			clusterScoped, byNodeAndNamespace),
		w("NamespaceScopedWatch", func(c *cacherEnv, t *testing.T) { storagetesting.RunTestNamespaceScopedWatch(c.ctx, t, c.delegator) },
			byNodeAndNamespace),
		w("WatchDispatchBookmarkEvents", func(c *cacherEnv, t *testing.T) {
			storagetesting.RunTestWatchDispatchBookmarkEvents(c.ctx, t, c.delegator, true)
		}),
		w("WatchBookmarksWithCorrectResourceVersion", func(c *cacherEnv, t *testing.T) {
			storagetesting.RunTestOptionalWatchBookmarksWithCorrectResourceVersion(c.ctx, t, c.delegator)
		}),
		w("SendInitialEventsBackwardCompatibility", func(c *cacherEnv, t *testing.T) {
			storagetesting.RunSendInitialEventsBackwardCompatibility(c.ctx, t, c.delegator)
		}),
	)
	semantic := func(name string, run func(s storage.Interface, t *testing.T)) suiteTest {
		return suiteTest{name: "Watch/" + name, fresh: true, run: func(t *testing.T) {
			c := newCacherEnv(t)
			run(&createAndWait{c.delegator}, t)
		}}
	}
	return append(tests,
		semantic("WatchSemantics", func(s storage.Interface, t *testing.T) { storagetesting.RunWatchSemantics(context.TODO(), t, s) }),
		semantic("WatchSemanticInitialEventsExtended", func(s storage.Interface, t *testing.T) {
			storagetesting.RunWatchSemanticInitialEventsExtended(context.TODO(), t, s)
		}),
		semantic("WatchListMatchSingle", func(s storage.Interface, t *testing.T) {
			storagetesting.RunWatchListMatchSingle(context.TODO(), t, s)
		}),
	)
}

package kubernetes

import (
	"context"
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/api/apitesting"
	examplev1 "k8s.io/apiserver/pkg/apis/example/v1"
	"k8s.io/apiserver/pkg/features"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/etcd3"
	etcdfeature "k8s.io/apiserver/pkg/storage/feature"
	storagetesting "k8s.io/apiserver/pkg/storage/testing"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/component-base/featuregate"
	featuregatetesting "k8s.io/component-base/featuregate/testing"
)

// suiteTest is one upstream test.
type suiteTest struct {
	name string
	run  func(t *testing.T)
	// fresh: the test needs a cluster of its own, as upstream gives every
	// test (watches from resourceVersion 1 replay the whole history).
	fresh bool
}

// gate sets a feature gate for the test; set gates before newEnv, which
// builds what reads them.
func gate(t *testing.T, f featuregate.Feature, on bool) {
	t.Helper()
	featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, f, on)
}

// basicRuns are the Run* tests both suites call, right after Create and in
// upstream's order, with nothing but the store under test.
var basicRuns = []struct {
	name string
	run  func(context.Context, *testing.T, storage.Interface)
}{
	{"CreateWithTTL", storagetesting.RunTestCreateWithTTL},
	{"CreateWithKeyExist", storagetesting.RunTestCreateWithKeyExist},
	{"Get", storagetesting.RunTestGet},
	{"UnconditionalDelete", storagetesting.RunTestUnconditionalDelete},
	{"ConditionalDelete", storagetesting.RunTestConditionalDelete},
	{"DeleteWithSuggestion", storagetesting.RunTestDeleteWithSuggestion},
	{"DeleteWithSuggestionAndConflict", storagetesting.RunTestDeleteWithSuggestionAndConflict},
	{"DeleteWithSuggestionOfDeletedObject", storagetesting.RunTestDeleteWithSuggestionOfDeletedObject},
	{"ValidateDeletionWithSuggestion", storagetesting.RunTestValidateDeletionWithSuggestion},
	{"ValidateDeletionWithOnlySuggestionValid", storagetesting.RunTestValidateDeletionWithOnlySuggestionValid},
	{"DeleteWithConflict", storagetesting.RunTestDeleteWithConflict},
}

// plain is a test that only needs the default store.
func plain(name string, run func(e *env, t *testing.T)) suiteTest {
	return suiteTest{name: name, run: func(t *testing.T) { run(newEnv(t), t) }}
}

// etcd3Suite is every storagetesting.Run* call of k8s.io/apiserver
// v0.37.2's pkg/storage/etcd3 tests (store_test.go, watcher_test.go), in
// their order, with upstream's setup for each.
func etcd3Suite() []suiteTest {
	tests := []suiteTest{plain("Create", func(e *env, t *testing.T) { storagetesting.RunTestCreate(e.ctx, t, e.store, e.checkStored()) })}
	for _, r := range basicRuns {
		tests = append(tests, plain(r.name, func(e *env, t *testing.T) { r.run(e.ctx, t, e.store) }))
	}
	tests = append(tests,
		suiteTest{name: "DeleteWithConflictAndMissingExpectedTransformOrDecodeError", run: func(t *testing.T) {
			gate(t, features.AllowUnsafeMalformedObjectDeletion, true)
			codec := &failableCodec{Codec: apitesting.TestCodec(codecs, examplev1.SchemeGroupVersion)}
			e := newEnv(t, withCodec(codec))
			storagetesting.RunTestDeleteWithConflictAndMissingExpectedTransformOrDecodeError(e.ctx, t, e.store, codec.setFailing)
		}},
		suiteTest{name: "DeleteWithConflictAndExpectedTransformError", run: func(t *testing.T) {
			gate(t, features.AllowUnsafeMalformedObjectDeletion, true)
			tr := &failableTransformer{Transformer: storagetesting.NewPrefixTransformer([]byte(storedPrefix), false)}
			e := newEnv(t, withTransformer(tr))
			storagetesting.RunTestDeleteExpectedTransformOrDecodeError(e.ctx, t, e.store, tr.setFailing)
		}},
		suiteTest{name: "DeleteWithConflictAndExpectedDecodeError", run: func(t *testing.T) {
			gate(t, features.AllowUnsafeMalformedObjectDeletion, true)
			codec := &failableCodec{Codec: apitesting.TestCodec(codecs, examplev1.SchemeGroupVersion)}
			e := newEnv(t, withCodec(codec))
			storagetesting.RunTestDeleteExpectedTransformOrDecodeError(e.ctx, t, e.store, codec.setFailing)
		}},
		suiteTest{name: "DeleteWithSuggestionAndMissingExpectedTransformOrDecodeFailure", run: func(t *testing.T) {
			gate(t, features.AllowUnsafeMalformedObjectDeletion, true)
			e := newEnv(t)
			storagetesting.RunTestDeleteWithSuggestionAndMissingExpectedTransformOrDecodeError(e.ctx, t, e.store)
		}},
		plain("PreconditionalDeleteWithSuggestion", func(e *env, t *testing.T) {
			storagetesting.RunTestPreconditionalDeleteWithSuggestion(e.ctx, t, e.store)
		}),
		plain("PreconditionalDeleteWithSuggestionPass", func(e *env, t *testing.T) {
			storagetesting.RunTestPreconditionalDeleteWithOnlySuggestionPass(e.ctx, t, e.store)
		}),
		plain("ListPaging", func(e *env, t *testing.T) { storagetesting.RunTestListPaging(e.ctx, t, e.store) }),
		plain("GetListNonRecursive", func(e *env, t *testing.T) {
			storagetesting.RunTestGetListNonRecursive(e.ctx, t, e.increaseRV(), e.store)
		}),
		plain("GetListRecursivePrefix", func(e *env, t *testing.T) { storagetesting.RunTestGetListRecursivePrefix(e.ctx, t, e.store) }),
		plain("KeySchema", func(e *env, t *testing.T) { storagetesting.RunTestKeySchema(e.ctx, t, e.store) }),
		suiteTest{name: "GetListWithErrorAggregation", run: func(t *testing.T) {
			gate(t, features.AllowUnsafeMalformedObjectDeletion, true)
			e := newEnv(t)
			s := etcd3.NewStoreWithUnsafeCorruptObjectDeletion(e.store, podsResource)
			storagetesting.RunTestGetListWithErrorAggregation(e.ctx, t, e.overridable(s), corruptErr())
		}},
		suiteTest{name: "GetListWithoutErrorAggregation", run: func(t *testing.T) {
			gate(t, features.AllowUnsafeMalformedObjectDeletion, false)
			e := newEnv(t)
			storagetesting.RunTestGetListWithoutErrorAggregation(e.ctx, t, e.overridable(e.store), corruptErr())
		}},
		plain("GuaranteedUpdate", func(e *env, t *testing.T) {
			storagetesting.RunTestGuaranteedUpdate(e.ctx, t, e.overridable(e.store), e.checkStored())
		}),
		plain("GuaranteedUpdateWithTTL", func(e *env, t *testing.T) { storagetesting.RunTestGuaranteedUpdateWithTTL(e.ctx, t, e.store) }),
		plain("GuaranteedUpdateChecksStoredData", func(e *env, t *testing.T) {
			storagetesting.RunTestGuaranteedUpdateChecksStoredData(e.ctx, t, e.overridable(e.store))
		}),
		plain("GuaranteedUpdateWithConflict", func(e *env, t *testing.T) {
			storagetesting.RunTestGuaranteedUpdateWithConflict(e.ctx, t, e.store)
		}),
		plain("GuaranteedUpdateWithSuggestionAndConflict", func(e *env, t *testing.T) {
			storagetesting.RunTestGuaranteedUpdateWithSuggestionAndConflict(e.ctx, t, e.store)
		}),
		plain("TransformationFailure", func(e *env, t *testing.T) {
			storagetesting.RunTestTransformationFailure(e.ctx, t, e.overridable(e.store))
		}),
	)
	for _, rangeStream := range []bool{false, true} {
		tests = append(tests, suiteTest{name: fmt.Sprintf("List/rangeStream=%v", rangeStream), run: func(t *testing.T) {
			gate(t, features.EtcdRangeStream, rangeStream)
			e := newEnv(t)
			storagetesting.RunTestList(e.ctx, t, e.store, e.compaction(e.compactWait()), false, e.lists)
			streamReads := e.kv.GetStreamReadsAndReset()
			if rangeStream && streamReads == 0 {
				t.Error("expected lists to be served by RangeStream")
			}
			if !rangeStream && streamReads > 0 {
				t.Errorf("expected no RangeStream requests with the feature disabled, got %d", streamReads)
			}
			// Beyond upstream: a server without RangeStream passes the
			// count above (the failed attempt counts); this one must
			// have served it.
			if rangeStream && !etcdfeature.DefaultFeatureSupportChecker.Supports(storage.RangeStream) {
				t.Error("RangeStream was marked unsupported: the server refused it")
			}
		}})
	}
	for _, rangeStream := range []bool{false, true} {
		tests = append(tests, suiteTest{name: fmt.Sprintf("ConsistentList/rangeStream=%v", rangeStream), run: func(t *testing.T) {
			gate(t, features.EtcdRangeStream, rangeStream)
			e := newEnv(t)
			storagetesting.RunTestConsistentList(e.ctx, t, e.store, e.increaseRV(), false, true, false)
		}})
	}
	tests = append(tests,
		suiteTest{name: "CompactRevision", run: func(t *testing.T) {
			gate(t, features.ListFromCacheSnapshot, true)
			e := newEnv(t)
			storagetesting.RunTestCompactRevision(e.ctx, t, e.store, e.increaseRV(), e.compaction(e.compactWait()))
		}},
		plain("ListContinuation", func(e *env, t *testing.T) {
			storagetesting.RunTestListContinuation(e.ctx, t, e.store, e.checkCalls())
		}),
		suiteTest{name: "ListPaginationRareObject", run: func(t *testing.T) {
			// Upstream: the snapshot feature adds a read of the compaction key.
			gate(t, features.ListFromCacheSnapshot, false)
			e := newEnv(t)
			storagetesting.RunTestListPaginationRareObject(e.ctx, t, e.store, e.checkCalls())
		}},
		plain("ListContinuationWithFilter", func(e *env, t *testing.T) {
			storagetesting.RunTestListContinuationWithFilter(e.ctx, t, e.store, e.checkCalls())
		}),
		plain("NamespaceScopedList", func(e *env, t *testing.T) { storagetesting.RunTestNamespaceScopedList(e.ctx, t, e.store) }),
		plain("ListInconsistentContinuation", func(e *env, t *testing.T) {
			storagetesting.RunTestListInconsistentContinuation(e.ctx, t, e.store, e.compaction(e.compactWait()))
		}),
		plain("ListResourceVersionMatch", func(e *env, t *testing.T) {
			storagetesting.RunTestListResourceVersionMatch(e.ctx, t, e.overridable(e.store))
		}),
	)
	for _, sizeBased := range []bool{true, false} {
		tests = append(tests, suiteTest{name: fmt.Sprintf("Stats/SizeBasedListCostEstimate=%v", sizeBased), run: func(t *testing.T) {
			e := newEnv(t)
			if sizeBased {
				if err := e.store.EnableResourceSizeEstimation(e.keysOf("/pods/")); err != nil {
					t.Fatal(err)
				}
			}
			storagetesting.RunTestStats(e.ctx, t, e.store, e.codec, e.prefix, sizeBased)
		}})
	}
	return append(tests, watchSuite()...)
}

// watchSuite is upstream's TestWatch (etcd3/watcher_test.go).
func watchSuite() []suiteTest {
	w := func(name string, run func(e *env, t *testing.T)) suiteTest { return plain("Watch/"+name, run) }
	tests := []suiteTest{
		w("Watch", func(e *env, t *testing.T) { storagetesting.RunTestWatch(e.ctx, t, e.store) }),
		w("ClusterScopedWatch", func(e *env, t *testing.T) { storagetesting.RunTestClusterScopedWatch(e.ctx, t, e.store) }),
		w("NamespaceScopedWatch", func(e *env, t *testing.T) { storagetesting.RunTestNamespaceScopedWatch(e.ctx, t, e.store) }),
		w("DeleteTriggerWatch", func(e *env, t *testing.T) { storagetesting.RunTestDeleteTriggerWatch(e.ctx, t, e.store) }),
		w("WatchFromZero", func(e *env, t *testing.T) {
			storagetesting.RunTestWatchFromZero(e.ctx, t, e.store, e.compaction(e.compactWait()))
		}),
		w("WatchFromNonZero", func(e *env, t *testing.T) { storagetesting.RunTestWatchFromNonZero(e.ctx, t, e.store) }),
		w("DelayedWatchDelivery", func(e *env, t *testing.T) { storagetesting.RunTestDelayedWatchDelivery(e.ctx, t, e.store) }),
		w("WatchError", func(e *env, t *testing.T) { storagetesting.RunTestWatchError(e.ctx, t, e.overridable(e.store)) }),
		w("WatchContextCancel", func(e *env, t *testing.T) { storagetesting.RunTestWatchContextCancel(e.ctx, t, e.store) }),
		w("WatcherTimeout", func(e *env, t *testing.T) { storagetesting.RunTestWatcherTimeout(e.ctx, t, e.store) }),
		w("WatchDeleteEventObjectHaveLatestRV", func(e *env, t *testing.T) {
			storagetesting.RunTestWatchDeleteEventObjectHaveLatestRV(e.ctx, t, e.store)
		}),
		w("WatchInitializationSignal", func(e *env, t *testing.T) {
			storagetesting.RunTestWatchInitializationSignal(e.ctx, t, e.store)
		}),
		// Upstream sets its etcd's progress notify interval to 1s for
		// this test; the clusters here run with it.
		w("ProgressNotify", func(e *env, t *testing.T) {
			storagetesting.RunOptionalTestProgressNotify(e.ctx, t, e.store, e.increaseRV())
		}),
		suiteTest{name: "Watch/WatchWithUnsafeDelete", run: func(t *testing.T) {
			gate(t, features.AllowUnsafeMalformedObjectDeletion, true)
			e := newEnv(t)
			storagetesting.RunTestWatchWithUnsafeDelete(e.ctx, t, e.overridable(e.store), corruptErr())
		}},
		w("WatchDispatchBookmarkEvents", func(e *env, t *testing.T) {
			storagetesting.RunTestWatchDispatchBookmarkEvents(e.ctx, t, e.store, false)
		}),
		w("SendInitialEventsBackwardCompatibility", func(e *env, t *testing.T) {
			storagetesting.RunSendInitialEventsBackwardCompatibility(e.ctx, t, e.store)
		}),
	}
	for _, rangeStream := range []bool{false, true} {
		prefix := fmt.Sprintf("Watch/RangeStream=%v/", rangeStream)
		streamed := func(name string, concurrentDecode bool, run func(e *env, t *testing.T)) suiteTest {
			return suiteTest{name: prefix + name, fresh: true, run: func(t *testing.T) {
				gate(t, features.EtcdRangeStream, rangeStream)
				if concurrentDecode {
					gate(t, features.ConcurrentWatchObjectDecode, true)
				}
				run(newEnv(t), t)
			}}
		}
		tests = append(tests,
			streamed("WatchSemantics", false, func(e *env, t *testing.T) { storagetesting.RunWatchSemantics(e.ctx, t, e.store) }),
			streamed("WatchSemanticsWithConcurrentDecode", true, func(e *env, t *testing.T) { storagetesting.RunWatchSemantics(e.ctx, t, e.store) }),
			streamed("WatchSemanticInitialEventsExtended", false, func(e *env, t *testing.T) {
				storagetesting.RunWatchSemanticInitialEventsExtended(e.ctx, t, e.store)
			}),
			streamed("WatchListMatchSingle", false, func(e *env, t *testing.T) { storagetesting.RunWatchListMatchSingle(e.ctx, t, e.store) }),
		)
	}
	return append(tests, w("WatchErrorEventIsBlockingFurtherEvent", func(e *env, t *testing.T) {
		storagetesting.RunWatchErrorIsBlockingFurtherEvents(e.ctx, t, e.overridable(e.store))
	}))
}

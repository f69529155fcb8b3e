package compat

// Normalisation and rendering of responses. Both servers' responses are
// rendered to text by the same code and compared as strings; only the
// differences that etcd itself does not promise are normalised away:
//
//   - header cluster_id, member_id and raft_term are cleared;
//   - lease IDs are replaced by -n for the n-th lease granted in the run
//     (server-chosen IDs are random); IDs never granted are kept;
//   - the keys of LeaseTimeToLive and the leases of LeaseLeases are sorted
//     (etcd returns them in map order);
//   - a remaining TTL between 1 and the granted TTL is shown as the granted
//     TTL (it depends on when the request arrived);
//   - values longer than 256 bytes are shown as their length and hash;
//   - watch events are compared one by one, not by how they were batched into
//     responses (see watch).
//
// Errors are rendered as their gRPC code and message, both of which clients
// depend on.

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

var textOpts = prototext.MarshalOptions{Multiline: true, Indent: "  ", EmitUnknown: true}

// render returns the normalised text of a response or error.
func (tg *target) render(msg proto.Message, err error) string {
	if err != nil {
		return renderErr(err)
	}
	m := proto.Clone(msg)
	tg.normalize(m.ProtoReflect())
	s := textOpts.Format(m)
	if s == "" {
		s = "{}"
	}
	return s
}

func renderErr(err error) string {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return fmt.Sprintf("error: code=%v desc=%q", ee.Code(), ee.Error())
	}
	if s, ok := status.FromError(err); ok {
		return fmt.Sprintf("error: code=%v desc=%q", s.Code(), s.Message())
	}
	return fmt.Sprintf("error (not a gRPC status): %v", err)
}

// normalize rewrites m in place, depth first.
func (tg *target) normalize(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				tg.normalize(l.Get(i).Message())
			}
		case fd.Message() != nil && !fd.IsMap():
			tg.normalize(v.Message())
		}
		return true
	})
	switch x := m.Interface().(type) {
	case *pb.ResponseHeader:
		tg.observeRev(x.Revision)
		x.ClusterId, x.MemberId, x.RaftTerm = 0, 0, 0
	case *mvccpb.KeyValue:
		x.Lease = tg.leaseName(x.Lease)
		x.Value = shorten(x.Value)
	case *pb.LeaseGrantResponse:
		x.ID = tg.leaseName(x.ID)
	case *pb.LeaseKeepAliveResponse:
		x.ID = tg.leaseName(x.ID)
	case *pb.LeaseTimeToLiveResponse:
		x.ID = tg.leaseName(x.ID)
		if x.TTL > 0 && x.TTL <= x.GrantedTTL {
			x.TTL = x.GrantedTTL
		}
		slices.SortFunc(x.Keys, func(a, b []byte) int { return strings.Compare(string(a), string(b)) })
	case *pb.LeaseStatus:
		x.ID = tg.leaseName(x.ID)
	case *pb.LeaseLeasesResponse:
		slices.SortFunc(x.Leases, func(a, b *pb.LeaseStatus) int {
			switch {
			case a.ID < b.ID:
				return -1
			case a.ID > b.ID:
				return 1
			}
			return 0
		})
	}
}

// shorten replaces a value too long to print with its length and hash.
func shorten(v []byte) []byte {
	if len(v) <= 256 {
		return v
	}
	return fmt.Appendf(nil, "<%d bytes, sha256 %x>", len(v), sha256.Sum256(v))
}

// opResponseProto returns the protobuf response inside a clientv3 OpResponse.
func opResponseProto(r clientv3.OpResponse) proto.Message {
	switch {
	case r.Get() != nil:
		return (*pb.RangeResponse)(r.Get())
	case r.Put() != nil:
		return (*pb.PutResponse)(r.Put())
	case r.Del() != nil:
		return (*pb.DeleteRangeResponse)(r.Del())
	case r.Txn() != nil:
		return (*pb.TxnResponse)(r.Txn())
	}
	panic("compat: empty OpResponse")
}

// lineDiff returns a line diff of a (etcd) and b (the target): lines only in
// a start with "-", only in b with "+", common ones with " ".
func lineDiff(a, b string) string {
	x := strings.Split(strings.TrimRight(a, "\n"), "\n")
	y := strings.Split(strings.TrimRight(b, "\n"), "\n")
	// lcs[i][j] is the length of the longest common subsequence of x[i:], y[j:].
	lcs := make([][]int, len(x)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(y)+1)
	}
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out strings.Builder
	i, j := 0, 0
	for i < len(x) || j < len(y) {
		switch {
		case i < len(x) && j < len(y) && x[i] == y[j]:
			out.WriteString("  " + x[i] + "\n")
			i, j = i+1, j+1
		case j == len(y) || (i < len(x) && lcs[i+1][j] >= lcs[i][j+1]):
			out.WriteString("- " + x[i] + "\n")
			i++
		default:
			out.WriteString("+ " + y[j] + "\n")
			j++
		}
	}
	return out.String()
}

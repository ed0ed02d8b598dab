package sdkcompat

import (
	"bytes"
	"fmt"
	"strconv"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// encodedPrefix is how jsonrpc.EncodeMessage starts every message: its wire
// struct lists jsonrpc, then id (go-sdk v1.8.0, internal/jsonrpc2/wire.go).
const encodedPrefix = `{"jsonrpc":"2.0","id":`

// EncodeResponse encodes resp as jsonrpc.EncodeMessage does, but with rawID
// (an id's JSON text, as the peer sent it) in place of resp.ID, whose
// int64 or string cannot hold every id JSON allows. It relies on the SDK
// writing the id second, right after "jsonrpc" (TestEncodeResponseWithRawID
// fails if a new SDK version does not).
func EncodeResponse(resp *jsonrpc.Response, rawID []byte) ([]byte, error) {
	data, err := jsonrpc.EncodeMessage(resp)
	if err != nil {
		return nil, err
	}
	var id []byte
	switch v := resp.ID.Raw().(type) {
	case int64:
		id = strconv.AppendInt(nil, v, 10)
	case string:
		id = strconv.AppendQuote(nil, v) // the SDK's ids of this kind are plain: only tests use them
	}
	head := encodedPrefix + string(id)
	if id == nil || !bytes.HasPrefix(data, []byte(head)) {
		return nil, fmt.Errorf("sdkcompat: the SDK no longer encodes a response as %s…: %.80s", head, data)
	}
	out := make([]byte, 0, len(data)-len(id)+len(rawID))
	out = append(out, encodedPrefix...)
	out = append(out, rawID...)
	return append(out, data[len(head):]...), nil
}

// DecodeID reads an id from its JSON text as the SDK's decoder does (a
// number as a float64 made an int64).
func DecodeID(raw []byte) (jsonrpc.ID, error) { return makeID(raw) }

// IDFor returns the SDK's id for the number n (a sequence number a
// transport gives a request of the peer's).
func IDFor(n int64) jsonrpc.ID {
	id, _ := jsonrpc.MakeID(float64(n))
	return id
}

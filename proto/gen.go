// Package proto holds the protobuf schemas of mcpmesh's own messages; the
// generated Go code is in the sub-packages. Regenerate with `go generate
// ./proto` (needs protoc and protoc-gen-go).
package proto

//go:generate sh -c "protoc --go_out=. --go_opt=paths=source_relative card.proto && mv card.pb.go cardpb/"
//go:generate sh -c "cd .. && protoc --go_out=. --go_opt=paths=source_relative proto/delegation.proto && mv proto/delegation.pb.go proto/delegationpb/"

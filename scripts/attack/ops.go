package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"

	"github.com/plcdir/plc/validate"
)

// identity is a DID the attacker owns: its rotation key and its head.
type identity struct {
	did  string
	key  atcrypto.PrivateKey
	pub  string
	body validate.Operation
	head *validate.Op
}

// newIdentity makes a fresh DID with one K-256 rotation key (also its
// signing key).
func newIdentity(handle string) (*identity, error) {
	k, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		return nil, err
	}
	pub, err := k.PublicKey()
	if err != nil {
		return nil, err
	}
	id := &identity{key: k, pub: pub.DIDKey()}
	id.body = validate.Operation{
		Type:                validate.TypeOperation,
		RotationKeys:        []string{id.pub},
		VerificationMethods: []validate.VerificationMethod{{ID: "atproto", Key: id.pub}},
		AlsoKnownAs:         []string{"at://" + handle},
		Services:            []validate.Service{{ID: "atproto_pds", Type: "AtprotoPersonalDataServer", Endpoint: "https://pds.example.com"}},
	}
	id.head, err = validate.Sign(id.body, k)
	if err != nil {
		return nil, err
	}
	id.did = id.head.GenesisDID()
	return id, nil
}

// update returns a signed update after the head with a new handle; it
// does not move the head (accept does).
func (id *identity) update(handle string) (*validate.Op, error) {
	body := id.body
	body.Prev = id.head.CID()
	body.AlsoKnownAs = []string{"at://" + handle}
	return validate.Sign(body, id.key)
}

func (id *identity) accept(op *validate.Op) {
	id.head = op
	id.body = op.Operation()
	id.body.Sig = ""
}

// postOp submits op for did and returns the status, Retry-After and body.
func postOp(base, did string, op *validate.Op) (status int, retryAfter string, body []byte, err error) {
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Post(base+"/"+did, "application/json", bytes.NewReader(op.AppendJSON(nil)))
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	body, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, resp.Header.Get("Retry-After"), body, nil
}

// auditCIDs returns the CIDs of did's audit log.
func auditCIDs(base, did string) ([]string, error) {
	status, _, body, err := get(base+"/"+did+"/log/audit", 30*time.Second)
	if err != nil {
		return nil, err
	}
	if status != 200 {
		return nil, fmt.Errorf("GET /%s/log/audit: %d %s", did, status, body)
	}
	var entries []struct {
		CID string `json:"cid"`
	}
	if err := json.Unmarshal(body, &entries); err != nil {
		return nil, err
	}
	cids := make([]string, len(entries))
	for i, e := range entries {
		cids[i] = e.CID
	}
	return cids, nil
}

// isJSONMessage reports whether body is a JSON object with a message.
func isJSONMessage(body []byte) bool {
	var m struct {
		Message *string `json:"message"`
	}
	return json.Unmarshal(body, &m) == nil && m.Message != nil
}

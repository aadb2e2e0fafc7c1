package gateway

// DecodeText exposes decodeText to the fuzz test.
var DecodeText = decodeText

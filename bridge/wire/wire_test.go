package wire

import "testing"

func TestWithin(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   *Error
		want Error
	}{
		{"names a field", Errorf(CodeNotAllowed, "field 'url': host %q is not in MEDIA_HOSTS", "x"), Error{Code: CodeNotAllowed, Message: `field 'thumbnail.url': host "x" is not in MEDIA_HOSTS`}},
		{"only the first field", Errorf(CodeInvalidRequest, "field 'path' and field 'url'"), Error{Code: CodeInvalidRequest, Message: "field 'thumbnail.path' and field 'url'"}},
		{"names no field", Errorf(CodeInvalidRequest, "the file is empty"), Error{Code: CodeInvalidRequest, Message: "thumbnail: the file is empty"}},
		{"keeps the errcode", &Error{Code: CodeMatrixError, ErrCode: "M_TOO_LARGE", Message: "too big"}, Error{Code: CodeMatrixError, ErrCode: "M_TOO_LARGE", Message: "thumbnail: too big"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Within("thumbnail", tc.in); *got != tc.want {
				t.Fatalf("got %+v, want %+v", *got, tc.want)
			}
		})
	}
}

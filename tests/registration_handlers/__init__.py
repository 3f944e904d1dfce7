"""Routes the registration tests derive steps from: fixed, so that adding a handler to
handlers/ (a project's everyday change) does not change what these tests expect."""

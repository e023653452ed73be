})(this);

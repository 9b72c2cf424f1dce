"""The units charrnn reports losses in: nats per character (natural log, what the loss is)
and bits per character (log base 2, what char-rnn papers quote). bpc = nats / LN2."""

import math

LN2 = math.log(2)

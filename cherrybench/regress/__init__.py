"""InstructMining (Cao et al. 2023): learn a linear rule log(eval loss) ~
mean indicators of a training subset, and apply it to records as a metric."""
